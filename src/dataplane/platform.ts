// Where the syscall layer is right. libc.ts lays out structs (msghdr, iovec,
// cmsghdr, sockaddr_in, ifreq) and uses ioctl numbers and socket constants of
// 64-bit little-endian Linux in their asm-generic / x86_64 form, from glibc's
// libc.so.6. x86_64 and arm64 share all of them (LP64, little-endian, the
// same _IOW encoding, the same SOL_SOCKET/SO_* and O_* values), so both are
// supported. Elsewhere they differ (32-bit: pointer and size_t widths; s390x
// and ppc64: big-endian; ppc, mips, sparc: other ioctl direction bits and
// SO_* values; musl: no libc.so.6 and other struct padding guarantees), and a
// wrong layout would not fail cleanly: the kernel would read garbage. So
// anything else is refused before the first struct is built.
import { endianness } from 'node:os';

export const SUPPORTED_PLATFORMS = 'Linux on x86_64 or arm64 (64-bit, little-endian) with glibc';

export interface PlatformFacts {
  platform: string;
  arch: string;
  endianness: 'BE' | 'LE';
  /** glibc's version at run time, undefined on another C library (musl). */
  glibc: string | undefined;
}

export function currentPlatform(): PlatformFacts {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return { platform: process.platform, arch: process.arch, endianness: endianness(), glibc: header?.glibcVersionRuntime };
}

/** Why this platform is not supported, or undefined when it is. */
export function unsupportedPlatformReason(p: PlatformFacts): string | undefined {
  const here = `${p.platform} ${p.arch}${p.platform === 'linux' ? (p.glibc ? ` glibc ${p.glibc}` : ' without glibc') : ''}`;
  if (p.platform !== 'linux' || (p.arch !== 'x64' && p.arch !== 'arm64') || p.endianness !== 'LE' || p.glibc === undefined) {
    return (
      `flannel-udp runs on ${SUPPORTED_PLATFORMS}; this is ${here}. ` +
      `Its syscall layer uses that ABI's struct layouts and ioctl numbers, which differ elsewhere.`
    );
  }
  return undefined;
}

export class UnsupportedPlatformError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsupportedPlatformError';
  }
}

/** Throws UnsupportedPlatformError unless this process runs where libc.ts is right. */
export function assertSupportedPlatform(): void {
  const reason = unsupportedPlatformReason(currentPlatform());
  if (reason !== undefined) throw new UnsupportedPlatformError(reason);
}
