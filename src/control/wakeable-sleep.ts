// A retry loop's pause that stop() can cut short: the etcd and Kubernetes
// watch loops back off between attempts, and shutting down must not wait
// out a back-off of several seconds.
export class WakeableSleep {
  private wakeUp: (() => void) | undefined;

  /** Resolves after ms, or at once when wake() is called meanwhile. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = undefined;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        resolve();
      };
    });
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    this.wakeUp?.();
  }
}
