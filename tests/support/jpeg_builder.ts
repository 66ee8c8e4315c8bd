/**
 * Builds small hostile JPEGs in tests (no binary fixtures): a grayscale progressive JPEG whose DC scans code
 * every 8x8 block with a single bit, repeated any number of times, optionally padded with comment segments.
 */

function seg(marker: number, body: number[] | Uint8Array): number[] {
  const len = body.length + 2;
  return [0xff, marker, len >> 8, len & 0xff, ...body];
}

/**
 * A valid grayscale progressive JPEG of `width`x`height` (flat gray): one DC-first scan (one bit per block)
 * repeated `scans` times, then EOI. `commentBytes` of COM padding go before the frame.
 */
export function progressiveGrayJpeg(
  width: number,
  height: number,
  scans: number,
  commentBytes = 0,
): Uint8Array {
  const head: number[] = [0xff, 0xd8];
  head.push(...seg(0xe0, [0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]));
  const parts: Uint8Array[] = [new Uint8Array(head)];
  for (let left = commentBytes; left > 0;) {
    const n = Math.min(left, 65533);
    const c = new Uint8Array(n + 4);
    c.set([0xff, 0xfe, (n + 2) >> 8, (n + 2) & 0xff]);
    c.fill(0x41, 4);
    parts.push(c);
    left -= n;
  }
  const tables: number[] = [];
  tables.push(...seg(0xdb, [0x00, ...new Array(64).fill(1)])); // DQT 0: all ones
  tables.push(...seg(0xc2, [8, height >> 8, height & 0xff, width >> 8, width & 0xff, 1, 1, 0x11, 0])); // SOF2
  // DHT: DC table 0 with one code of length 1 for category 0 (a zero difference)
  tables.push(...seg(0xc4, [0x00, 1, ...new Array(15).fill(0), 0]));
  parts.push(new Uint8Array(tables));
  const blocks = Math.ceil(width / 8) * Math.ceil(height / 8);
  const sos = new Uint8Array(seg(0xda, [1, 1, 0x00, 0, 0, 0])); // 1 component, DC first scan, Ah=Al=0
  const data = new Uint8Array(Math.ceil(blocks / 8)); // all '0' bits: every block's DC difference is 0
  for (let i = 0; i < scans; i++) parts.push(sos, data);
  parts.push(new Uint8Array([0xff, 0xd9]));
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
