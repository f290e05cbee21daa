// The kube-mode flags of `up`, and the errors a misconfigured DaemonSet gets:
// each a clear line and exit code 2, before anything is created.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseKubeFlags } from '../../src/control/kube-options.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 20_000, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('parseKubeFlags: defaults as flanneld; companions need --kube-subnet-mgr', () => {
  assert.is(parseKubeFlags({}), undefined);
  assert.equal(parseKubeFlags({ 'kube-subnet-mgr': true }), {
    kubeconfigFile: undefined,
    apiUrl: undefined,
    annotationPrefix: 'flannel.alpha.coreos.com',
    netConfigPath: '/etc/kube-flannel/net-conf.json',
    setNodeNetworkUnavailable: true,
  });
  assert.throws(() => parseKubeFlags({ 'kubeconfig-file': '/x' }), /--kubeconfig-file needs --kube-subnet-mgr/);
  assert.throws(() => parseKubeFlags({ 'net-config-path': '/x' }), /--net-config-path needs --kube-subnet-mgr/);
  assert.throws(() => parseKubeFlags({ 'kube-subnet-mgr': true, 'kube-api-url': '192.0.2.1:6443' }), /not an http\(s\):\/\/ URL/);
});

test('up: refused combinations and setup errors, each one line and exit code 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), `fut-kube-cli-${process.pid}-`));
  try {
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, '{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}');
    const base = ['up', '--kube-subnet-mgr', '--tun', 'futkube0', '--control-socket', 'off', '--public-ip', '127.0.0.1', '--subnet-file', join(dir, 'subnet.env')];
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['up', '--kube-subnet-mgr', '--leases', '/x'], {}, /--kube-subnet-mgr excludes --leases and --etcd-endpoints/],
      [['up', '--kube-subnet-mgr', '--backend', 'vxlan'], {}, /Backend\.Type/],
      [['up', '--leases', '/x', '--kubeconfig-file', '/y'], {}, /--kubeconfig-file needs --kube-subnet-mgr/],
      [[...base, '--net-config-path', netConf], { NODE_NAME: 'n1' }, /not running in a Kubernetes pod \(KUBERNETES_SERVICE_HOST is not set\): give --kubeconfig-file or --kube-api-url/],
      [[...base, '--kube-api-url', 'https://127.0.0.1:1', '--net-config-path', join(dir, 'missing.json')], { NODE_NAME: 'n1' }, /cannot read the network config --net-config-path .*missing\.json: no such file/],
      [[...base, '--kube-api-url', 'https://127.0.0.1:1', '--net-config-path', netConf], {}, /needs the node name: set NODE_NAME, or POD_NAME and POD_NAMESPACE/],
      [[...base, '--kube-api-url', 'https://127.0.0.1:1', '--net-config-path', netConf, '--kube-annotation-prefix', 'a/b/c'], { NODE_NAME: 'n1' }, /at most one slash/],
    ];
    // Independent refusals, none gets far enough to create anything: started together.
    const results = await Promise.all(cases.map(([args, env]) => cli(args, env)));
    for (const [i, [args, , pattern]] of cases.entries()) {
      const r = results[i];
      assert.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    }
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}');
    const r = await cli([...base, '--kube-api-url', 'https://127.0.0.1:1', '--net-config-path', bad], { NODE_NAME: 'n1' });
    assert.is(r.code, 2);
    assert.match(r.stderr, /Backend\.Type "host-gw" is not supported by flannel-udp \(supported: udp, vxlan\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM while waiting for the API server: a clean exit 0, nothing left behind', async () => {
  const dir = mkdtempSync(join(tmpdir(), `fut-kube-cli-${process.pid}-`));
  try {
    const netConf = join(dir, 'net-conf.json');
    writeFileSync(netConf, '{"Network": "10.244.0.0/16"}');
    const child = spawn(
      process.execPath,
      [CLI, 'up', '--kube-subnet-mgr', '--kube-api-url', 'https://127.0.0.1:1', '--net-config-path', netConf, '--tun', 'futkube1', '--control-socket', 'off', '--public-ip', '127.0.0.1', '--subnet-file', join(dir, 'subnet.env')],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', NODE_NAME: 'n1' }, stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    const waiting = new Promise<void>((resolve) =>
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (/listing nodes: .*retrying with backoff/.test(stderr)) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await waiting;
    child.kill('SIGTERM');
    assert.is(await exited, 0, stderr);
    assert.match(stderr, /SIGTERM: stopping/);
    assert.not.ok(existsSync(join(dir, 'subnet.env')), 'no subnet.env: the node never got a subnet');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--help documents the kube flags', async () => {
  const r = await cli(['up', '--help']);
  for (const flag of ['--kube-subnet-mgr', '--kubeconfig-file', '--kube-api-url', '--kube-annotation-prefix', '--net-config-path']) assert.ok(r.stdout.includes(flag), flag);
});

test.run();
