// Latency percentiles per deployment from the server's own /metrics histograms (since it
// started), estimated the way Prometheus's histogram_quantile does: linear within a bucket.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}\s+(\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function histograms(text, family) {
  const byDeployment = new Map();
  for (const line of text.split("\n")) {
    const m = SAMPLE.exec(line.trim());
    if (!m || m[1] !== family + "_bucket") continue;
    const labels = {};
    for (const [, k, v] of m[2].matchAll(LABEL)) labels[k] = v.replace(/\\(.)/g, "$1");
    const le = labels.le === "+Inf" ? Infinity : Number(labels.le);
    const name = labels.deployment || "";
    if (!byDeployment.has(name)) byDeployment.set(name, []);
    byDeployment.get(name).push([le, Number(m[3])]);
  }
  for (const buckets of byDeployment.values()) buckets.sort((a, b) => a[0] - b[0]);
  return byDeployment;
}

export function quantile(q, buckets) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(count - prevCount, 1e-9);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}
