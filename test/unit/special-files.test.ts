// Issue 26, items 1 and 2: the leases file and subnet.env the agent is
// pointed at may be a FIFO, a device or a huge file, at start or swapped in
// later. Each is refused with a clear error, read with a size bound, and the
// reader never hangs (a hang here is a test that does not settle within its
// deadline, not a timing figure).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rename, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCidr } from '../../src/control/ipv4-address.js';
import type { Lease } from '../../src/control/lease.js';
import { LeasesFileSource, MAX_LEASES_FILE_BYTES } from '../../src/control/leases-file.js';
import { MAX_SUBNET_FILE_BYTES, readSubnetFile } from '../../src/control/subnet-file.js';
import { BoundedFileError, readBoundedFile } from '../../src/control/bounded-file.js';

/** Generous: a read that is not stuck settles in milliseconds; a stuck one never does. */
const HANG_DEADLINE_MS = 10_000;

async function settles<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${HANG_DEADLINE_MS} ms (blocked on the file?)`)), HANG_DEADLINE_MS);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

async function rejection(what: string, promise: Promise<unknown>): Promise<Error> {
  try {
    await settles(what, promise);
  } catch (err) {
    if (/still pending after/.test((err as Error).message)) throw err;
    return err as Error;
  }
  assert.unreachable(`${what}: resolved`);
  throw new Error('unreachable');
}

const mkfifo = (path: string) => execFileSync('mkfifo', [path]);
const LEASE_2 = '{"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}}';
const SUBNET_ENV = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'special-files-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function recorder() {
  const snapshots: Lease[][] = [];
  const errors: Error[] = [];
  return { snapshots, errors, handlers: { onLeases: (l: Lease[]) => snapshots.push(l), onError: (e: Error) => errors.push(e) } };
}

test('leases file at start: a FIFO, a symlink to one, /dev/zero and an oversized file are refused, naming the type or the limit', async () => {
  await withDir(async (dir) => {
    const fifo = join(dir, 'fifo.json');
    mkfifo(fifo);
    const link = join(dir, 'link.json');
    await symlink(fifo, link);
    const big = join(dir, 'big.json');
    await writeFile(big, '');
    await truncate(big, MAX_LEASES_FILE_BYTES + 1);
    const cases: [string, RegExp][] = [
      [fifo, /fifo\.json: the leases file is a FIFO \(named pipe\), not a regular file/],
      [link, /link\.json: the leases file is a FIFO \(named pipe\), not a regular file/],
      ['/dev/zero', /\/dev\/zero: the leases file is a device, not a regular file/],
      [big, new RegExp(`big\\.json: the leases file is ${MAX_LEASES_FILE_BYTES + 1} bytes; the limit is 8 MiB`)],
    ];
    for (const [path, message] of cases) {
      const rec = recorder();
      const err = await rejection(path, new LeasesFileSource(path).start(rec.handlers));
      assert.match(err.message, message);
      assert.is(rec.snapshots.length, 0);
    }
  });
});

test('leases file swapped live for a FIFO, /dev/zero or an oversized file: reported, the old table kept, stop() still ends', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'leases.json');
    await writeFile(path, LEASE_2);
    const source = new LeasesFileSource(path, { ownSubnet: parseCidr('10.244.1.1/24') });
    const rec = recorder();
    try {
      await settles('start', source.start(rec.handlers));
      assert.is(rec.snapshots.length, 1);

      const fifo = join(dir, 'fifo');
      mkfifo(fifo);
      await rename(fifo, path); // mv -T fifo leases.json
      await settles('reload of a FIFO (SIGHUP)', source.reload());
      assert.match(rec.errors.at(-1)?.message ?? '', /leases\.json: the leases file is a FIFO \(named pipe\), not a regular file/);

      await rm(path);
      await symlink('/dev/zero', path);
      await settles('reload of /dev/zero', source.reload());
      assert.match(rec.errors.at(-1)?.message ?? '', /the leases file is a device, not a regular file/);

      await rm(path);
      await writeFile(path, '');
      await truncate(path, MAX_LEASES_FILE_BYTES + 4096);
      await settles('reload of an oversized file', source.reload());
      assert.match(rec.errors.at(-1)?.message ?? '', /the leases file is \d+ bytes; the limit is 8 MiB/);

      assert.is(rec.snapshots.length, 1, 'no snapshot from a refused file');
      // A FIFO again, then stop: nothing is left waiting for a writer.
      await rm(path);
      mkfifo(path);
      void source.reload();
      await settles('stop() with a FIFO in place', source.stop());
    } finally {
      await settles('stop()', source.stop());
    }
  });
});

test('subnet file: a FIFO, /dev/zero and an oversized file are refused; a regular one still reads', async () => {
  await withDir(async (dir) => {
    const fifo = join(dir, 'subnet.env');
    mkfifo(fifo);
    assert.match((await rejection('FIFO', readSubnetFile(fifo))).message, /subnet\.env: the subnet file is a FIFO \(named pipe\), not a regular file/);
    assert.match((await rejection('/dev/zero', readSubnetFile('/dev/zero'))).message, /\/dev\/zero: the subnet file is a device, not a regular file/);
    const big = join(dir, 'big.env');
    await writeFile(big, SUBNET_ENV + '#'.repeat(MAX_SUBNET_FILE_BYTES));
    assert.match((await rejection('oversized', readSubnetFile(big))).message, /big\.env: the subnet file is \d+ bytes; the limit is 64 KiB/);
    const good = join(dir, 'good.env');
    await writeFile(good, SUBNET_ENV);
    assert.is((await readSubnetFile(good)).mtu, 1472);
    assert.match((await rejection('missing', readSubnetFile(join(dir, 'missing.env')))).message, /missing\.env: cannot read the subnet file: no such file/);
  });
});

test('readBoundedFile: exactly the limit is read, one byte more is refused; a directory and a socket-like path are named', async () => {
  await withDir(async (dir) => {
    const path = join(dir, 'f');
    await writeFile(path, 'x'.repeat(100));
    assert.is((await readBoundedFile(path, 100, 'the file')).text.length, 100);
    const over = await rejection('over', readBoundedFile(path, 99, 'the file'));
    assert.instance(over, BoundedFileError);
    assert.is((over as BoundedFileError).reason, 'too-large');
    const empty = join(dir, 'empty');
    await writeFile(empty, '');
    assert.is((await readBoundedFile(empty, 10, 'the file')).text, '');
    const d = await rejection('directory', readBoundedFile(dir, 10, 'the file'));
    assert.match(d.message, /the file is a directory, not a regular file|cannot read the file: is a directory/);
  });
});

test.run();
