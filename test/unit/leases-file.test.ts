import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, formatIPv4, parseCidr } from '../../src/control/ipv4-address.js';
import { type Lease, formatSubnetKey, LeaseError, parseDualStackSubnetKey, parseLeaseAttrs, parseSubnetKey } from '../../src/control/lease.js';
import { formatCidr6, formatIPv6 } from '../../src/control/ipv6-address.js';
import { LeasesFileError, LeasesFileSource, parseLeasesFile } from '../../src/control/leases-file.js';
import { checkLeases } from '../../src/control/lease-sanity.js';

const PATH = '/etc/flannel-udp/leases.json';
const THREE_NODES = `{
  "10.244.1.0-24": {"PublicIP": "192.0.2.1", "BackendType": "udp"},
  "10.244.2.0-24": {"PublicIP": "192.0.2.2", "PublicIPv6": null, "BackendType": "udp", "BackendData": null},
  "10.244.3.0-24": {"PublicIP": "192.0.2.3", "BackendType": "vxlan", "BackendData": {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}}
}
`;

function fileError(fn: () => unknown): LeasesFileError {
  try {
    fn();
  } catch (err) {
    assert.instance(err, LeasesFileError);
    return err as LeasesFileError;
  }
  assert.unreachable('no error');
  throw new Error('unreachable');
}

test('parseSubnetKey / formatSubnetKey', () => {
  const c = parseSubnetKey('10.244.2.0-24');
  assert.is(formatCidr(c), '10.244.2.0/24');
  assert.is(formatSubnetKey(c), '10.244.2.0-24');
  assert.is(formatCidr(parseSubnetKey('0.0.0.0-0')), '0.0.0.0/0');
  assert.is(formatCidr(parseSubnetKey('192.0.2.7-32')), '192.0.2.7/32');
  const cases: [string, RegExp][] = [
    ['10.244.2.0/24', /not a flannel subnet key/],
    ['10.244.2.0-33', /prefix length 33 is not in 0\.\.32/],
    ['10.244.2.0-024', /not a flannel subnet key|prefix length/],
    ['10.244.2.1-24', /host bits are set \(did you mean 10\.244\.2\.0-24\?\)/],
    ['10.244.300.0-24', /"10\.244\.300\.0" is not a valid IPv4 address/],
    ['10.244.2.0-24&fc00::1-64', /host bits are set in the IPv6 half \(did you mean fc00::-64\?\)/],
    ['10.244.2.0-24&FC00::-64', /IPv6 half after '&' is not network-prefixlength in lower case/],
    ['10.244.2.0-24&fc00::-129', /IPv6 prefix length 129 is not in 0\.\.128/],
    ['10.244.2.0-24&fc00::-64&fc01::-64', /more than one '&'/],
    ['10.244.2.0-24&10.0.0.0-8', /"10\.0\.0\.0" is not a valid IPv6 address/],
    ['', /not a flannel subnet key/],
  ];
  for (const [key, message] of cases) {
    try {
      parseSubnetKey(key);
      assert.unreachable(key);
    } catch (err) {
      assert.instance(err, LeaseError, key);
      assert.is((err as LeaseError).key, key);
      assert.match((err as Error).message, message, key);
      assert.ok((err as Error).message.startsWith(`lease ${JSON.stringify(key)}: `));
    }
  }
});

test('dual-stack keys: both halves, as flannel MakeSubnetKey writes them; an IPv6-only key has the zero IPv4 half', () => {
  const { subnet, ipv6Subnet, ipv6Only } = parseDualStackSubnetKey('10.244.2.0-24&fd00:10:244:2::-64');
  assert.is(formatCidr(subnet), '10.244.2.0/24');
  assert.is(formatCidr6(ipv6Subnet!), 'fd00:10:244:2::/64');
  assert.is(ipv6Only, false);
  assert.is(formatSubnetKey(subnet, ipv6Subnet), '10.244.2.0-24&fd00:10:244:2::-64');
  assert.is(parseDualStackSubnetKey('0.0.0.0-0&fd00:10:244:2::-64').ipv6Only, true);
  assert.is(parseDualStackSubnetKey('10.244.2.0-24').ipv6Subnet, undefined);

  const lease = parseLeaseAttrs('10.244.2.0-24&fd00:10:244:2::-64', {
    PublicIP: '192.0.2.2', PublicIPv6: 'fd00:192::2', BackendType: 'vxlan',
    BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:02' }, BackendV6Data: { VNI: 1, VtepMAC: '02:00:00:00:06:02' },
  });
  assert.is(lease.key, '10.244.2.0-24&fd00:10:244:2::-64');
  assert.is(formatCidr6(lease.ipv6Subnet!), 'fd00:10:244:2::/64');
  assert.is(formatIPv6(lease.publicIpv6!), 'fd00:192::2');
  assert.equal(lease.backendV6Data, { VNI: 1, VtepMAC: '02:00:00:00:06:02' });
  assert.is(lease.ipv6Only, undefined);
  // IPv4-only leases as flannel writes them: "PublicIPv6": null, no IPv6 fields.
  const v4 = parseLeaseAttrs('10.244.3.0-24', { PublicIP: '192.0.2.3', PublicIPv6: null, BackendType: 'udp', BackendData: null });
  assert.equal([v4.ipv6Subnet, v4.publicIpv6, v4.backendV6Data, v4.ipv6Only], [undefined, undefined, undefined, undefined]);
  // IPv6-only: no IPv4 public address needed, an IPv6 one is.
  const v6only = parseLeaseAttrs('0.0.0.0-0&fd00:10:244:4::-64', { PublicIP: '0.0.0.0', PublicIPv6: 'fd00:192::4', BackendType: 'udp' });
  assert.is(v6only.ipv6Only, true);
  assert.throws(() => parseLeaseAttrs('0.0.0.0-0&fd00:10:244:4::-64', { BackendType: 'udp' }), /PublicIPv6: missing on an IPv6-only lease/);
  assert.throws(() => parseLeaseAttrs('10.244.2.0-24', { PublicIP: '192.0.2.2', PublicIPv6: '192.0.2.2', BackendType: 'udp' }), /PublicIPv6: .*not a valid IPv6 address/);
});

test('parseLeaseAttrs validates flannel lease JSON', () => {
  const lease = parseLeaseAttrs('10.244.2.0-24', { PublicIP: '192.0.2.2', BackendType: 'udp', BackendData: { x: 1 } });
  assert.is(formatIPv4(lease.publicIp), '192.0.2.2');
  assert.is(lease.backendType, 'udp');
  assert.equal(lease.backendData, { x: 1 });
  assert.is(lease.key, '10.244.2.0-24');
  assert.is(parseLeaseAttrs('10.244.2.0-24', { PublicIP: '192.0.2.2', BackendType: 'udp' }).backendData, null);

  const bad: [unknown, string, RegExp][] = [
    [{ BackendType: 'udp' }, 'PublicIP', /PublicIP: missing/],
    [{ PublicIP: '192.0.2.300', BackendType: 'udp' }, 'PublicIP', /PublicIP: "192\.0\.2\.300" is not a valid IPv4 address/],
    [{ PublicIP: 3221225986, BackendType: 'udp' }, 'PublicIP', /must be a string/],
    [{ PublicIP: '192.0.2.2' }, 'BackendType', /BackendType: missing/],
    [{ PublicIP: '192.0.2.2', BackendType: 7 }, 'BackendType', /non-empty string/],
    [{ PublicIp: '192.0.2.2', BackendType: 'udp' }, 'PublicIp', /did you mean PublicIP\?/],
    [{ PublicIP: '192.0.2.2', BackendType: 'udp', PublicIPv6: 5 }, 'PublicIPv6', /null or a string/],
    ['192.0.2.2', '', /must be a JSON object/],
    [null, '', /must be a JSON object/],
  ];
  for (const [attrs, attribute, message] of bad) {
    try {
      parseLeaseAttrs('10.244.2.0-24', attrs);
      assert.unreachable(JSON.stringify(attrs));
    } catch (err) {
      assert.instance(err, LeaseError);
      assert.is((err as LeaseError).attribute, attribute);
      assert.match((err as Error).message, /^lease "10\.244\.2\.0-24": /);
      assert.match((err as Error).message, message);
    }
  }
});

test('parseLeasesFile reads flannel lease attributes under subnet keys', () => {
  const { leases, skipped } = parseLeasesFile(THREE_NODES, PATH);
  assert.equal(skipped, []);
  assert.equal(
    leases.map((l) => [l.key, formatCidr(l.subnet), formatIPv4(l.publicIp), l.backendType]),
    [
      ['10.244.1.0-24', '10.244.1.0/24', '192.0.2.1', 'udp'],
      ['10.244.2.0-24', '10.244.2.0/24', '192.0.2.2', 'udp'],
      ['10.244.3.0-24', '10.244.3.0/24', '192.0.2.3', 'vxlan'],
    ],
  );
  assert.equal(leases[2].backendData, { VNI: 1, VtepMAC: 'aa:bb:cc:dd:ee:ff' });
  assert.equal(parseLeasesFile('{}', PATH), { leases: [], skipped: [] });
});

test("the node's own subnet is skipped, with the reason", () => {
  const own = parseCidr('10.244.2.1/24'); // as FLANNEL_SUBNET has it
  const { leases, skipped } = parseLeasesFile(THREE_NODES, PATH, own);
  assert.equal(leases.map((l) => l.key), ['10.244.1.0-24', '10.244.3.0-24']);
  assert.equal(skipped, ["10.244.2.0-24 (line 3): this node's own subnet; skipped"]);
});

test('overlapping leases are not a file error: each is judged alone by the sense checks, as etcd leases are (issue 26)', () => {
  const own = parseCidr('10.244.1.1/24');
  const text = `{
  "10.244.50.0-24": {"PublicIP": "192.0.2.50", "BackendType": "udp"},
  "10.244.50.0-25": {"PublicIP": "192.0.2.51", "BackendType": "udp"},
  "10.244.60.0-24": {"PublicIP": "192.0.2.60", "BackendType": "udp"},
  "10.244.0.0-23": {"PublicIP": "192.0.2.9", "BackendType": "udp"}
}`;
  const { leases } = parseLeasesFile(text, PATH, own);
  assert.equal(leases.map((l) => l.key), ['10.244.50.0-24', '10.244.50.0-25', '10.244.60.0-24', '10.244.0.0-23']);
  const { accepted, rejected } = checkLeases(leases, { network: parseCidr('10.244.0.0/16'), ownSubnet: parseCidr('10.244.1.0/24'), ownAddresses: [] });
  assert.equal(accepted.map((l) => l.key).sort(), ['10.244.50.0-25', '10.244.60.0-24']);
  assert.equal(rejected.map((r) => `${r.key} ${r.reason}`).sort(), ['10.244.0.0-23 subnet-overlaps-own', '10.244.50.0-24 subnet-overlaps-lease']);
});

test('invalid JSON gives the path, line, column and position', () => {
  const cases: [string, RegExp][] = [
    ['{\n  "10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"},\n}', /^\/etc\/flannel-udp\/leases\.json:3:1: invalid JSON: expected a double-quoted property name, found "}" \(position 70\)$/],
    ['{"10.244.2.0-24": }', /:1:19: invalid JSON: unexpected "}" \(position 18\)$/],
    ['{"10.244.2.0-24": {"PublicIP": "192.0.2.2"', /:1:43: invalid JSON: unexpected end of input \(position 42\)$/],
    ["{'10.244.2.0-24': 1}", /:1:2: invalid JSON: expected a double-quoted property name/],
    ['{} x', /:1:4: invalid JSON: unexpected "x" after the end/],
    ['', /:1:1: invalid JSON: unexpected end of input/],
  ];
  for (const [text, message] of cases) {
    const err = fileError(() => parseLeasesFile(text, PATH));
    assert.match(err.message, message, text);
    assert.ok(err.message.startsWith(PATH), err.message);
  }
});

test('a duplicate subnet key is an error, not silently last-one-wins', () => {
  const text = '{\n"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp"},\n"10.244.2.0-24": {"PublicIP": "192.0.2.3", "BackendType": "udp"}\n}';
  const err = fileError(() => parseLeasesFile(text, PATH));
  assert.is(err.key, '10.244.2.0-24');
  assert.match(err.message, /:3:1: invalid JSON: duplicate key "10\.244\.2\.0-24" \(first at line 2\)/);
});

test('a bad key or bad attributes name the key and line', () => {
  const badKey = fileError(() => parseLeasesFile('{\n  "10.244.2.0/24": {"PublicIP": "192.0.2.2", "BackendType": "udp"}\n}', PATH));
  assert.is(badKey.key, '10.244.2.0/24');
  assert.is(badKey.message, `${PATH}:2:3: lease "10.244.2.0/24": not a flannel subnet key (expected network-prefixlength, e.g. 10.244.2.0-24)`);

  const badIp = fileError(() => parseLeasesFile(THREE_NODES.replace('192.0.2.3', '192.0.2.333'), PATH));
  assert.is(badIp.key, '10.244.3.0-24');
  assert.match(badIp.message, /:4:3: lease "10\.244\.3\.0-24": PublicIP: "192\.0\.2\.333" is not a valid IPv4 address/);

  const notObject = fileError(() => parseLeasesFile('[]', PATH));
  assert.match(notObject.message, /expected a JSON object of subnet key/);
});

// ---- LeasesFileSource -------------------------------------------------------

const lease = (n: number, ip = `192.0.2.${n}`): string => `"10.244.${n}.0-24": {"PublicIP": "${ip}", "BackendType": "udp"}`;

/** Collects events and lets a test wait for the next one. */
class Recorder {
  snapshots: Lease[][] = [];
  errors: Error[] = [];
  private waiters: (() => void)[] = [];
  readonly handlers = {
    onLeases: (leases: Lease[]) => {
      this.snapshots.push(leases);
      this.wake();
    },
    onError: (err: Error) => {
      this.errors.push(err);
      this.wake();
    },
  };
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  /** Resolves when `done()` holds, rejects after `ms`. */
  until(done: () => boolean, ms = 1000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
      const check = (): void => {
        if (done()) {
          clearTimeout(timer);
          resolve();
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}

const keysOf = (leases: Lease[] | undefined): string[] => (leases ?? []).map((l) => l.key);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** How editors and `mv` update a file: write elsewhere, rename over. */
async function replaceFile(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

test('LeasesFileSource: start emits, edits are followed, broken edits keep the old table, stop ends events', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'leases-file-'));
  const path = join(dir, 'leases.json');
  const source = new LeasesFileSource(path, { ownSubnet: parseCidr('10.244.1.1/24') });
  try {
    await writeFile(path, `{${lease(1)}, ${lease(2)}}`);
    const rec = new Recorder();
    await source.start(rec.handlers);
    assert.is(rec.snapshots.length, 1, 'first snapshot delivered before start() resolves');
    assert.equal(keysOf(rec.snapshots[0]), ['10.244.2.0-24']); // own subnet skipped
    assert.match(source.describe(), /leases file .*leases\.json/);

    // Edit: write + rename, the way editors and `mv` do it.
    await replaceFile(path, `{${lease(1)}, ${lease(2)}, ${lease(3)}}`);
    await rec.until(() => rec.snapshots.length === 2);
    assert.equal(keysOf(rec.snapshots[1]), ['10.244.2.0-24', '10.244.3.0-24']);

    // In-place rewrite is followed too.
    await writeFile(path, `{${lease(4)}}`);
    await rec.until(() => rec.snapshots.length === 3);
    assert.equal(keysOf(rec.snapshots[2]), ['10.244.4.0-24']);

    // Broken edit: onError, no snapshot; the table in force stays the last good one.
    await replaceFile(path, `{${lease(4)}, ${lease(5, '192.0.2.500')}}`);
    await rec.until(() => rec.errors.length === 1);
    assert.instance(rec.errors[0], LeasesFileError);
    assert.match(rec.errors[0].message, /PublicIP: "192\.0\.2\.500" is not a valid IPv4 address/);
    await sleep(150); // proving nothing more comes: three debounce periods (50 ms) with no snapshot
    assert.is(rec.snapshots.length, 3);

    // SIGHUP reload of a still-broken file: reported again, still no snapshot, no throw.
    await source.reload();
    assert.is(rec.errors.length, 2);
    assert.is(rec.snapshots.length, 3);

    // Fixed: the new table arrives.
    await replaceFile(path, `{${lease(4)}, ${lease(5)}}`);
    await rec.until(() => rec.snapshots.length === 4);
    assert.equal(keysOf(rec.snapshots[3]), ['10.244.4.0-24', '10.244.5.0-24']);

    // reload() re-emits the current table even when unchanged.
    await source.reload();
    assert.is(rec.snapshots.length, 5);

    // Other files in the directory do not trigger anything.
    await writeFile(join(dir, 'unrelated.txt'), 'x');
    await sleep(150); // proving nothing comes: three debounce periods (50 ms) with no event
    assert.is(rec.snapshots.length, 5);
    assert.is(rec.errors.length, 2);

    await source.stop();
    await replaceFile(path, `{${lease(6)}}`);
    await writeFile(path, 'not json');
    await sleep(200); // proving nothing comes after stop(): four debounce periods
    assert.is(rec.snapshots.length, 5, 'no snapshot after stop()');
    assert.is(rec.errors.length, 2, 'no error after stop()');
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('LeasesFileSource: start() rejects when the first read fails', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'leases-file-'));
  try {
    const missing = new LeasesFileSource(join(dir, 'missing.json'));
    const rec = new Recorder();
    try {
      await missing.start(rec.handlers);
      assert.unreachable('start resolved');
    } catch (err) {
      assert.instance(err, LeasesFileError);
      assert.match((err as Error).message, /missing\.json: cannot read the leases file: no such file$/);
    }

    const brokenPath = join(dir, 'broken.json');
    await writeFile(brokenPath, '{"10.244.2.0-24": ');
    try {
      await new LeasesFileSource(brokenPath).start(rec.handlers);
      assert.unreachable('start resolved');
    } catch (err) {
      assert.match((err as Error).message, /broken\.json:1:19: invalid JSON: unexpected end of input/);
    }

    const noDir = new LeasesFileSource(join(dir, 'no-such-dir', 'leases.json'));
    try {
      await noDir.start(rec.handlers);
      assert.unreachable('start resolved');
    } catch (err) {
      assert.match((err as Error).message, /cannot watch directory/);
    }
    assert.is(rec.snapshots.length, 0);
    assert.is(rec.errors.length, 0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('LeasesFileSource: a deleted file is reported once and the old table kept', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'leases-file-'));
  const path = join(dir, 'leases.json');
  const source = new LeasesFileSource(path);
  try {
    await writeFile(path, `{${lease(2)}}`);
    const rec = new Recorder();
    await source.start(rec.handlers);
    await rm(path);
    await rec.until(() => rec.errors.length === 1);
    assert.match(rec.errors[0].message, /no such file/);
    await writeFile(join(dir, 'leases.json.swp'), 'x'); // unrelated noise
    await sleep(150); // proving nothing comes: three debounce periods (50 ms) with no event
    assert.is(rec.errors.length, 1);
    assert.is(rec.snapshots.length, 1);
    await writeFile(path, `{${lease(3)}}`);
    await rec.until(() => rec.snapshots.length === 2);
    assert.equal(keysOf(rec.snapshots[1]), ['10.244.3.0-24']);
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('absurdly deep JSON is refused with a clear error, not a stack overflow', () => {
  const deep = '{"10.244.2.0-24": {"PublicIP": "192.0.2.2", "BackendType": "udp", "BackendData": ' + '['.repeat(10_000) + ']'.repeat(10_000) + '}}';
  assert.throws(() => parseLeasesFile(deep, 'deep.json'), (err: Error) => !(err instanceof RangeError) && /nested more than 64 levels/.test(err.message));
});

test.run();
