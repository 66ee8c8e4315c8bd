/**
 * Importing the training code installs the kernel gradients training needs (`installGradients`,
 * `zoo/backend/registry.ts`): inference never loads them, training always has them.
 *
 * @module
 */

import { installGradients } from "../../zoo/backend/registry.ts";

installGradients();
