// The observability flags of `up`: defaults, values, and the errors a user
// sees (through the real CLI, which refuses them before touching anything).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ObserveFlagError, parseObserveFlags, DEFAULT_TRACE_RATE } from '../../src/observe/options.js';
import { controlSocketPath } from '../../src/observe/control-socket.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

test('defaults: nothing observed but the control socket', () => {
  assert.equal(parseObserveFlags({}, 'flannel0'), { controlSocket: controlSocketPath('flannel0') });
  assert.equal(parseObserveFlags({ 'control-socket': 'off' }, 'flannel0'), {});
  assert.equal(parseObserveFlags({ 'healthz-ip': '127.0.0.1' }, 'flannel0').healthz, undefined, 'port 0 = off, as flanneld');
});

test('every flag', () => {
  const o = parseObserveFlags(
    {
      trace: true,
      'trace-filter': 'icmp and host 10.244.2.2',
      'trace-limit': '20',
      'trace-rate': '0',
      capture: '/var/tmp/cap',
      'capture-rotate-mb': '8',
      'healthz-ip': '127.0.0.1',
      'healthz-port': '9102',
      'control-socket': '/tmp/x.sock',
    },
    'cni7',
  );
  assert.equal(o, {
    trace: { filter: 'icmp and host 10.244.2.2', limit: 20, perSecond: 0 },
    capture: { dir: '/var/tmp/cap', rotateBytes: 8 * 1024 * 1024, maxFiles: 4 },
    healthz: { ip: '127.0.0.1', port: 9102 },
    controlSocket: '/tmp/x.sock',
  });
  assert.equal(parseObserveFlags({ trace: true }, 'flannel0').trace, { filter: '', limit: 100, perSecond: DEFAULT_TRACE_RATE });
  assert.equal(parseObserveFlags({ capture: 'd' }, 'flannel0').capture, { dir: 'd', rotateBytes: 64 << 20, maxFiles: 4 });
  assert.equal(parseObserveFlags({ 'healthz-port': '8080' }, 'flannel0').healthz, { ip: '0.0.0.0', port: 8080 });
});

test('bad values are refused with the flag named', () => {
  const cases: Array<[Record<string, string | boolean>, RegExp]> = [
    [{ 'trace-filter': 'icmp' }, /--trace-filter needs --trace/],
    [{ 'trace-limit': '5' }, /--trace-limit needs --trace/],
    [{ trace: true, 'trace-filter': 'icmp or' }, /--trace-filter: trace filter: expected a primitive .* at position 8/],
    [{ trace: true, 'trace-limit': '-1' }, /--trace-limit: "-1" is not a whole number from 0/],
    [{ trace: true, 'trace-rate': 'x' }, /--trace-rate: "x"/],
    [{ 'capture-rotate-mb': '8' }, /--capture-rotate-mb needs --capture/],
    [{ capture: 'd', 'capture-rotate-mb': '0' }, /--capture-rotate-mb: "0" is not a whole number from 1/],
    [{ capture: '' }, /--capture: give a directory/],
    [{ 'healthz-port': '70000' }, /--healthz-port: "70000"/],
    [{ 'healthz-ip': 'localhost', 'healthz-port': '1' }, /--healthz-ip: "localhost" is not a valid IPv4 address/],
    [{ 'control-socket': '' }, /--control-socket: give a path, or off/],
  ];
  for (const [values, message] of cases) {
    assert.throws(
      () => parseObserveFlags(values, 'flannel0'),
      (err: Error) => err instanceof ObserveFlagError && message.test(err.message),
      JSON.stringify(values),
    );
  }
});

function cli(args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
}

test('flannel-udp up refuses bad observability flags with exit code 2, before creating anything', async () => {
  const base = ['up', '--leases', '/nonexistent/leases.json', '--subnet-file', '/nonexistent/subnet.env', '--public-ip', '192.0.2.1'];
  const r1 = await cli([...base, '--trace-limit', '5']);
  assert.is(r1.code, 2);
  assert.is(r1.stderr, 'flannel-udp: --trace-limit needs --trace\n');
  const r2 = await cli([...base, '--trace', '--trace-filter', 'port http']);
  assert.is(r2.code, 2);
  assert.match(r2.stderr, /^flannel-udp: --trace-filter: trace filter: expected a port number \(0-65535\) after "port", found "http" at position 6\n  port http\n       \^\n$/);
  const help = await cli(['up', '--help']);
  assert.match(help.stdout, /--healthz-port N/);
  assert.match(help.stdout, /--capture DIR/);
  const usage = await cli(['--help']);
  assert.match(usage.stdout, /flannel-udp stats \[--tun NAME\]/);
  assert.match(usage.stdout, /flannel-udp trace \[--tun NAME\]/);
});

test.run();
