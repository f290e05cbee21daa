// Defect 7: the syscall layer assumes 64-bit little-endian Linux with glibc
// (struct layouts, ioctl numbers, libc.so.6). Anything else must be refused
// with a clear message, before a struct is laid out wrong.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { unsupportedPlatformReason } from '../../src/dataplane/platform.js';

const libcModule = JSON.stringify(new URL('../../src/dataplane/libc.js', import.meta.url).href);

function loadLibcAs(platform: string, arch: string): Promise<{ ok: boolean; message: string }> {
  const child = `
Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} });
Object.defineProperty(process, 'arch', { value: ${JSON.stringify(arch)} });
try {
  await import(${libcModule});
  process.stdout.write(JSON.stringify({ ok: true, message: '' }));
} catch (e) {
  process.stdout.write(JSON.stringify({ ok: false, message: String(e && e.message) }));
}
`;
  return new Promise((resolve, reject) =>
    execFile(process.execPath, ['--input-type=module', '-e', child], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout)),
    ),
  );
}

for (const [platform, arch] of [
  ['linux', 'ia32'],
  ['linux', 'arm'],
  ['linux', 's390x'],
  ['linux', 'ppc64'],
  ['linux', 'mips64el'],
  ['darwin', 'arm64'],
  ['freebsd', 'x64'],
] as const) {
  test(`defect 7: refuses to load the syscall layer on ${platform} ${arch}, naming what is supported`, async () => {
    const r = await loadLibcAs(platform, arch);
    assert.not.ok(r.ok, 'the syscall layer loaded on an unsupported platform');
    assert.match(r.message, new RegExp(`${platform}.*${arch}|${arch}.*${platform}`));
    assert.match(r.message, /x86_64/);
    assert.match(r.message, /arm64/);
    assert.match(r.message, /glibc/);
  });
}

test('defect 7: loads on the platform this runs on (x86_64 or arm64 Linux with glibc)', async () => {
  const r = await loadLibcAs(process.platform, process.arch);
  assert.ok(r.ok, r.message);
});

test('defect 7: the rule itself: Linux, x64 or arm64, little-endian, glibc', () => {
  const ok = { platform: 'linux', arch: 'x64', endianness: 'LE', glibc: '2.36' } as const;
  assert.is(unsupportedPlatformReason(ok), undefined);
  assert.is(unsupportedPlatformReason({ ...ok, arch: 'arm64' }), undefined);
  assert.match(unsupportedPlatformReason({ ...ok, glibc: undefined })!, /linux x64 without glibc/);
  assert.match(unsupportedPlatformReason({ ...ok, endianness: 'BE' })!, /little-endian/);
  assert.match(unsupportedPlatformReason({ ...ok, arch: 'riscv64' })!, /riscv64/);
});

test.run();
