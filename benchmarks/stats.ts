/** Small statistics over plain arrays of numbers. */

export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** The q-quantile (0..1) by linear interpolation between order statistics; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return quantileSorted(sorted, q);
}

export function quantileSorted(sorted: readonly number[] | Float64Array, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const at = (sorted.length - 1) * q;
  const low = Math.floor(at);
  const high = Math.ceil(at);
  return sorted[low]! + (sorted[high]! - sorted[low]!) * (at - low);
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

/** Median with min and max; null when there is nothing to summarise. */
export function spread(values: readonly number[]): Spread | null {
  if (values.length === 0) return null;
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

/** min / max of per-worker counts: 1 = perfectly even, 0 = someone never ran. */
export function fairness(perWorker: readonly number[]): number {
  const max = Math.max(...perWorker);
  return max === 0 ? 0 : Math.min(...perWorker) / max;
}
