// flanneld's default public interface: the IPv4 default route's, from /proc/net/route.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultRouteInterface } from '../../src/control/default-interface.js';

const HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT';

test('the default route with the lowest metric wins; other routes and down routes do not count', () => {
  const table = [
    HEADER,
    'eth1\t00000000\t0102A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0',
    'eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0',
    'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
    'eth9\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0',
  ].join('\n');
  assert.is(defaultRouteInterface(table), 'eth0');
});

test('no default route, or no table: undefined', () => {
  assert.is(defaultRouteInterface(`${HEADER}\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n`), undefined);
  assert.is(defaultRouteInterface(''), undefined);
  assert.is(defaultRouteInterface('garbage\nmore garbage'), undefined);
});

test.run();
