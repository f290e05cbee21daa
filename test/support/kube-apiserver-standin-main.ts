// The kube-apiserver stand-in as its own process, so a test can run it inside
// a network namespace (where the agents reach it over the underlay) and kill
// and restart it. Argument: a JSON config file (StandInProcessConfig). It
// prints one line when serving, then one "request {json}" line per request
// decided (for the RBAC assertions). SIGTERM: close and exit 0.
import { readFileSync } from 'node:fs';
import { KubeApiServerStandIn } from './kube-apiserver-standin.js';
import { SERVING_LINE, type StandInProcessConfig } from './kube-standin-kit.js';

async function main(): Promise<void> {
  const config = JSON.parse(readFileSync(process.argv[2], 'utf8')) as StandInProcessConfig;
  const server = await KubeApiServerStandIn.start({
    host: config.host,
    port: config.port,
    tls: { cert: readFileSync(config.certFile, 'utf8'), key: readFileSync(config.keyFile, 'utf8') },
    tokens: config.tokens,
    rbacYaml: readFileSync(config.manifestFile, 'utf8'),
    unixSocket: config.unixSocket,
    stateFile: config.stateFile,
    bookmarkMs: config.bookmarkMs,
    onRequest: (r) => process.stdout.write(`request ${JSON.stringify(r)}\n`),
  });
  process.stdout.write(`${SERVING_LINE} on ${server.url} and ${config.unixSocket} at resourceVersion ${server.resourceVersion()}\n`);
  const stop = () => void server.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  process.stderr.write(`kube-apiserver stand-in: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
