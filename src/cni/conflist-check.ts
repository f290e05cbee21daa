// What install-cni checks before it installs an operator's conflist (the
// ConfigMap's cni-conf.json): that a runtime can load it as a list and that
// our flannel plugin will accept the configuration the runtime derives from
// it. A typo found here fails the init container with a clear message,
// instead of every pod on the node failing at sandbox creation.
import { type ConfList, parseConfList, pluginConfig } from './chain.js';
import { parseFlannelNetConf } from './flannel-conf.js';
import { CniError, SUPPORTED_VERSIONS } from './spec.js';

export class ConfListError extends Error {
  override name = 'ConfListError';
}

/** Parses and checks the conflist text; the parsed list, or a ConfListError that says what to fix. */
export function checkFlannelConfList(text: string, source = 'conflist'): ConfList {
  let list: ConfList;
  try {
    list = parseConfList(text, source);
  } catch (err) {
    throw new ConfListError((err as Error).message);
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(list.cniVersion)) {
    throw new ConfListError(`${source}: cniVersion "${list.cniVersion}" is not one the flannel plugin speaks (${SUPPORTED_VERSIONS.join(', ')})`);
  }
  // The flannel plugin creates the pod's interface (through bridge); chained
  // plugins such as portmap need its result, so it must come first.
  const flannel = list.plugins.findIndex((p) => p.type === 'flannel');
  if (flannel === -1) throw new ConfListError(`${source}: no plugin of type "flannel" in "plugins"`);
  if (flannel !== 0) throw new ConfListError(`${source}: the "flannel" plugin must be the first of "plugins" (it creates the interface the others chain on)`);
  if (list.plugins.some((p, i) => i !== flannel && p.type === 'flannel')) throw new ConfListError(`${source}: more than one "flannel" plugin`);
  const conf = pluginConfig(list, list.plugins[0]!, { containerId: 'install-cni-check', netns: '', ifName: 'eth0' });
  try {
    parseFlannelNetConf(conf, list.cniVersion);
  } catch (err) {
    if (err instanceof CniError) throw new ConfListError(`${source}: plugins[0] (flannel): ${err.message}`);
    throw err;
  }
  return list;
}
