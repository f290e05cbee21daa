// Imported first by libc.ts, so an unsupported platform is refused before
// koffi or libc.so.6 is even loaded (see platform.ts).
import { assertSupportedPlatform } from './platform.js';

assertSupportedPlatform();
