// The only module that talks to the kernel directly: typed wrappers over the
// libc calls the data plane needs, bound with koffi (FFI with prebuilt
// binaries), so the project needs no C source and no node-gyp build.
//
// Pointers cross the boundary as plain numbers (`uintptr_t`): every buffer the
// hot path hands to the kernel lives in a NativeMemory block whose address is
// read once (ArrayBuffer backing stores never move), so a call costs one FFI
// transition and no per-call Buffer marshalling or allocation.
// Every constant and struct layout below is that of 64-bit little-endian
// Linux with glibc (x86_64 and arm64 alike): anything else is refused first,
// before koffi loads and before a struct is laid out wrong (platform.ts).
import './platform-check.js';
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

// Linux x86_64 / aarch64 constants (the same on both; see platform.ts).
export const O_RDWR = 0o2;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = O_NONBLOCK;
export const SOCK_CLOEXEC = O_CLOEXEC;
export const SOL_SOCKET = 1;
export const SO_SNDBUF = 7;
export const SO_NO_CHECK = 11; // IPv4 UDP: send with a zero checksum
export const SO_RCVBUF = 8;
export const SO_REUSEPORT = 15;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const SO_ATTACH_REUSEPORT_CBPF = 51; // a classic BPF program picks the socket of a SO_REUSEPORT group
export const SO_DETACH_REUSEPORT_BPF = 68;
export const SOL_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const IPV6_V6ONLY = 26; // an AF_INET6 socket that takes IPv6 only: IPv4 stays on its own socket
export const UDP_SEGMENT = 103; // UDP GSO: one sendmsg, many datagrams of this size
export const UDP_GRO = 104; // UDP GRO: one recvmsg, many datagrams back to back
export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const EFD_NONBLOCK = O_NONBLOCK;
export const EFD_CLOEXEC = O_CLOEXEC;

export const EINTR = 4;
export const EAGAIN = 11;
export const EBUSY = 16;

// struct sizes and offsets on LP64 Linux.
export const SIZEOF_POLLFD = 8; // int fd; short events; short revents
export const SIZEOF_IOVEC = 16; // void *base; size_t len
export const SIZEOF_MMSGHDR = 64; // struct msghdr + unsigned msg_len (+ pad)
export const MSGHDR_NAME = 0;
export const MSGHDR_NAMELEN = 8;
export const MSGHDR_IOV = 16;
export const MSGHDR_IOVLEN = 24;
export const MSGHDR_CONTROL = 32;
export const MSGHDR_CONTROLLEN = 40;
export const MSGHDR_FLAGS = 48;
export const MMSGHDR_LEN = 56;
export const SIZEOF_SOCKADDR_IN = 16;
// struct sockaddr_in6 { u16 family; u16 port (BE); u32 flowinfo; u8 addr[16]; u32 scope_id; }
export const SIZEOF_SOCKADDR_IN6 = 28;
export const SOCKADDR_IN6_ADDR = 8;
export const SIZEOF_IFREQ = 40;
// struct cmsghdr { size_t len; int level; int type; } then data, 8-byte aligned.
export const SIZEOF_CMSGHDR = 16;
export const CMSG_SPACE_INT = 24; // CMSG_SPACE(sizeof(int)), also fits a uint16_t
export const CMSG_LEN_U16 = 18; // CMSG_LEN(sizeof(uint16_t)): UDP_SEGMENT's value

const c_open = libc.func('int open(const char *path, int flags)');
const c_close = libc.func('int close(int fd)');
const c_ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)');
const c_read = libc.func('long read(int fd, uintptr_t buf, unsigned long count)');
const c_write = libc.func('long write(int fd, uintptr_t buf, unsigned long count)');
const c_writev = libc.func('long writev(int fd, uintptr_t iov, int iovcnt)');
const c_socket = libc.func('int socket(int domain, int type, int protocol)');
const c_socketpair = libc.func('int socketpair(int domain, int type, int protocol, uintptr_t fds)');
const c_setsockopt = libc.func(
  'int setsockopt(int fd, int level, int name, uintptr_t value, unsigned int length)',
);
const c_getsockopt = libc.func(
  'int getsockopt(int fd, int level, int name, uintptr_t value, uintptr_t length)',
);
const c_bind = libc.func('int bind(int fd, uintptr_t addr, unsigned int length)');
const c_getsockname = libc.func('int getsockname(int fd, uintptr_t addr, uintptr_t length)');
const c_connect = libc.func('int connect(int fd, uintptr_t addr, unsigned int length)');
const c_poll = libc.func('int poll(uintptr_t fds, unsigned long count, int timeoutMs)');
const c_recvmmsg = libc.func(
  'int recvmmsg(int fd, uintptr_t msgs, unsigned int count, int flags, uintptr_t timeout)',
);
const c_sendmmsg = libc.func('int sendmmsg(int fd, uintptr_t msgs, unsigned int count, int flags)');
const c_eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
const c_epoll_create1 = libc.func('int epoll_create1(int flags)');
const c_epoll_ctl = libc.func('int epoll_ctl(int epfd, int op, int fd, uintptr_t event)');
const c_strerror = libc.func('const char *strerror(int errnum)');
const c_clock_gettime = libc.func('int clock_gettime(int clock, uintptr_t ts)');
const c_prctl = libc.func('int prctl(int option, ...)');
const PR_SET_NAME = 15;

/** errno of the last failed call on this thread (koffi saves it right after the call). */
export function errno(): number {
  return koffi.errno();
}

export function strerror(code: number): string {
  return c_strerror(code) as string;
}

/** An Error carrying the syscall name and errno, thrown only on setup paths, never per packet. */
export class SyscallError extends Error {
  constructor(
    readonly syscall: string,
    readonly code: number,
    detail = '',
  ) {
    super(`${syscall}${detail ? ' ' + detail : ''}: ${strerror(code)} (errno ${code})`);
    this.name = 'SyscallError';
  }
}

function check(ret: number, syscall: string, detail?: string): number {
  if (ret < 0) throw new SyscallError(syscall, koffi.errno(), detail);
  return ret;
}

// ---- setup-path wrappers (throw on failure) ----

export function openPath(path: string, flags: number): number {
  return check(c_open(path, flags) as number, 'open', path);
}

export function close(fd: number): void {
  c_close(fd);
}

/** ioctl with a pointer argument; `arg` is the NativeMemory address of the struct. */
export function ioctlPtr(fd: number, request: number, arg: number, what: string): number {
  return check(c_ioctl(fd, request, 'uintptr_t', arg) as number, 'ioctl', what);
}

/** ioctl with an integer argument (e.g. TUNSETOFFLOAD flags); returns -errno instead of throwing: for probing optional features. */
export function tryIoctlInt(fd: number, request: number, arg: number): number {
  const ret = c_ioctl(fd, request, 'unsigned long', arg) as number;
  return ret < 0 ? -koffi.errno() : ret;
}

export function socket(domain: number, type: number, protocol: number): number {
  return check(c_socket(domain, type, protocol) as number, 'socket');
}

/** Two connected sockets (AF_UNIX, SOCK_DGRAM: message boundaries kept, as a TUN keeps them). */
export function socketpair(domain: number, type: number): [number, number] {
  const fds = new NativeMemory(8);
  check(c_socketpair(domain, type, 0, fds.address) as number, 'socketpair');
  return [fds.view.getInt32(0, true), fds.view.getInt32(4, true)];
}

export function setsockopt(fd: number, level: number, name: number, valueAddr: number, length: number, what: string): void {
  check(c_setsockopt(fd, level, name, valueAddr, length) as number, 'setsockopt', what);
}

/** Returns -errno instead of throwing, for options a kernel may not have (UDP_GRO, UDP_SEGMENT). */
export function trySetsockopt(fd: number, level: number, name: number, valueAddr: number, length: number): number {
  const ret = c_setsockopt(fd, level, name, valueAddr, length) as number;
  return ret < 0 ? -koffi.errno() : ret;
}

/**
 * Attaches a classic BPF program (struct sock_filter instructions) to the
 * SO_REUSEPORT group `fd` is bound in: it picks the receiving socket from then
 * on, for the whole group; null detaches the group's program (back to the
 * kernel's hash). Returns -errno instead of throwing, so a kernel without it
 * (attach before 4.5, detach before 5.8) is a fallback, not a failure.
 */
export function trySetReuseportCbpf(fd: number, program: readonly { code: number; jt: number; jf: number; k: number }[] | null): number {
  if (program === null) {
    const unused = new NativeMemory(8); // the value is ignored, but setsockopt wants an int's length
    return trySetsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, unused.address, 4);
  }
  // struct sock_fprog { u16 len; struct sock_filter *filter; }, then the filters {u16 code; u8 jt; u8 jf; u32 k}.
  const mem = new NativeMemory(16 + 8 * program.length);
  mem.view.setUint16(0, program.length, true);
  mem.setU64(8, mem.address + 16);
  program.forEach((insn, i) => {
    mem.view.setUint16(16 + 8 * i, insn.code, true);
    mem.view.setUint8(16 + 8 * i + 2, insn.jt);
    mem.view.setUint8(16 + 8 * i + 3, insn.jf);
    mem.view.setUint32(16 + 8 * i + 4, insn.k, true);
  });
  return trySetsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, mem.address, 16);
}

export function getsockopt(fd: number, level: number, name: number, valueAddr: number, lengthAddr: number, what: string): void {
  check(c_getsockopt(fd, level, name, valueAddr, lengthAddr) as number, 'getsockopt', what);
}

export function bind(fd: number, addr: number, length: number, what: string): void {
  check(c_bind(fd, addr, length) as number, 'bind', what);
}

export function connect(fd: number, addr: number, length: number, what: string): void {
  check(c_connect(fd, addr, length) as number, 'connect', what);
}

export function getsockname(fd: number, addr: number, lengthAddr: number): void {
  check(c_getsockname(fd, addr, lengthAddr) as number, 'getsockname');
}

export function eventfd(initval: number, flags: number): number {
  return check(c_eventfd(initval, flags) as number, 'eventfd');
}

/**
 * An epoll descriptor watching `fds` for input, level-triggered: poll() on it
 * says "readable" while any of them is. The worker loop polls it in place of
 * one socket when there are two (the IPv6 underlay's), so the loop is unchanged.
 */
export function epollOf(fds: readonly number[]): number {
  const ep = check(c_epoll_create1(O_CLOEXEC) as number, 'epoll_create1');
  // struct epoll_event: u32 events, then u64 data (packed at 4 on x86_64, aligned at 8 on arm64); data unused.
  const event = new NativeMemory(16);
  event.view.setUint32(0, POLLIN, true);
  try {
    for (const fd of fds) check(c_epoll_ctl(ep, 1 /* EPOLL_CTL_ADD */, fd, event.address) as number, 'epoll_ctl');
  } catch (err) {
    c_close(ep);
    throw err;
  }
  return ep;
}

/** Names the calling thread (15 bytes at most), as top -H, perf and /proc/<pid>/task/<tid>/comm show it. Best effort. */
export function setThreadName(name: string): void {
  c_prctl(PR_SET_NAME, 'const char *', name.slice(0, 15));
}

// ---- hot-path wrappers: return the raw result (-1 on error, read errno()) ----
//
// Addresses may be passed as bigint (see Pointers): a pointer is above 2^31,
// so as a JS number computed per call (base + offset) it is a heap-allocated
// HeapNumber at the FFI boundary, 16 bytes of garbage per syscall. A bigint
// made once is passed by reference and allocates nothing (koffi reads it as
// uintptr_t; measured in test/unit/dataplane-allocation.test.ts).

export function read(fd: number, addr: number | bigint, count: number): number {
  return c_read(fd, addr, count) as number;
}

export function write(fd: number, addr: number | bigint, count: number): number {
  return c_write(fd, addr, count) as number;
}

export function writev(fd: number, iovAddr: number | bigint, count: number): number {
  return c_writev(fd, iovAddr, count) as number;
}

export function poll(fdsAddr: number | bigint, count: number, timeoutMs: number): number {
  return c_poll(fdsAddr, count, timeoutMs) as number;
}

export function recvmmsg(fd: number, msgsAddr: number | bigint, count: number, flags: number): number {
  return c_recvmmsg(fd, msgsAddr, count, flags, 0) as number;
}

export function sendmmsg(fd: number, msgsAddr: number | bigint, count: number, flags: number): number {
  return c_sendmmsg(fd, msgsAddr, count, flags) as number;
}

/**
 * The wall clock without garbage: Date.now() returns a freshly allocated heap
 * number (16 bytes a call; the time is above 2^31 ms), too much for a loop
 * that reads it every turn. clock_gettime(CLOCK_REALTIME) writes into native
 * memory and the milliseconds go straight into a Float64Array slot.
 */
export class WallClock {
  private readonly ts = new NativeMemory(16);

  /** Stores the time in ms since the epoch (as Date.now()) at target[index]. */
  readInto(target: Float64Array, index: number): void {
    c_clock_gettime(0, this.ts.pointer);
    const v = this.ts.view;
    target[index] = (v.getUint32(0, true) + v.getUint32(4, true) * 0x1_0000_0000) * 1000 + Math.floor(v.getUint32(8, true) / 1_000_000);
  }
}

/** CLOCK_MONOTONIC in ms (fractional), also without garbage: for intervals, as performance.now() (which allocates an array per call). */
export class MonotonicClock {
  private readonly ts = new NativeMemory(16);

  readInto(target: Float64Array, index: number): void {
    c_clock_gettime(1, this.ts.pointer);
    const v = this.ts.view;
    target[index] = (v.getUint32(0, true) + v.getUint32(4, true) * 0x1_0000_0000) * 1000 + v.getUint32(8, true) / 1_000_000;
  }
}

/**
 * Addresses inside one NativeMemory block as bigints, made once per distinct
 * offset and reused: what the hot path hands to the kernel. The offsets a
 * worker uses are few (its slots, its message arrays), so the cache stays small.
 */
export class Pointers {
  private readonly cache = new Map<number, bigint>();

  constructor(private readonly memory: NativeMemory) {}

  at(offset: number): bigint {
    let p = this.cache.get(offset);
    if (p === undefined) {
      p = BigInt(this.memory.address + offset);
      this.cache.set(offset, p);
    }
    return p;
  }
}

/**
 * A block of memory the kernel can read and write through plain addresses.
 * Backed by an ordinary ArrayBuffer (V8 keeps ArrayBuffer backing stores
 * outside the moving heap), so JS reads it through typed-array views at no
 * cost and the address stays valid for as long as this object is referenced.
 */
export class NativeMemory {
  readonly buffer: ArrayBuffer;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly address: number;

  /**
   * `allocate` makes the backing ArrayBuffer of at least the given length
   * (packet pools pass allocateChecksumMemory, a WebAssembly.Memory's buffer,
   * so the wasm checksum can read their packets); the views cover `size`
   * rounded up to 64 bytes.
   */
  constructor(readonly size: number, allocate: (byteLength: number) => ArrayBuffer = (n) => new ArrayBuffer(n)) {
    // Round up so 8-byte fields of structs laid out in it stay aligned.
    const length = (size + 63) & ~63;
    this.buffer = allocate(length);
    this.bytes = new Uint8Array(this.buffer, 0, length);
    this.view = new DataView(this.buffer, 0, length);
    this.address = Number(koffi.address(this.buffer));
  }

  /**
   * The address as a bigint, for the hot-path wrappers (made once, so passing
   * it allocates nothing). Always reach it through this object: a bigint kept
   * alone does not keep the memory alive, and the kernel would write into
   * freed memory once the garbage collector took it.
   */
  get pointer(): bigint {
    return (this.cachedPointer ??= BigInt(this.address));
  }
  private cachedPointer: bigint | undefined;

  /** Writes a 64-bit pointer/size field without BigInt (addresses fit in 53 bits). */
  setU64(offset: number, value: number): void {
    this.view.setUint32(offset, value >>> 0, true);
    this.view.setUint32(offset + 4, Math.floor(value / 0x1_0000_0000), true);
  }

  getU64(offset: number): number {
    return this.view.getUint32(offset, true) + this.view.getUint32(offset + 4, true) * 0x1_0000_0000;
  }
}
