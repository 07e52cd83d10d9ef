// Numbers and times as the page shows them (the reader's locale; tests pin en-US, UTC).

const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const significant = {
  4: new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 }),
  6: new Intl.NumberFormat(undefined, { maximumSignificantDigits: 6 }),
};
const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});

/** `digits` significant digits (4 in tables and charts; 6 for the latest value); null as a dash. */
export function formatNumber(x, digits = 4) {
  if (typeof x !== "number" || !Number.isFinite(x)) return "—";
  const a = Math.abs(x);
  // Past these magnitudes plain digits stop being readable: use scientific notation.
  if (a >= 1e9 || (a !== 0 && a < 1e-3)) return x.toExponential(digits - 1);
  // Never round away digits left of the decimal point.
  return a >= 10 ** digits ? whole.format(x) : significant[digits].format(x);
}

export function formatTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  return Number.isNaN(date.getTime()) ? "—" : clock.format(date);
}

export function isoTime(epochSeconds) {
  const date = new Date(epochSeconds * 1000);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

/** A window label (`10s`, `1m`, `5m`, `1h`, `250ms`) in seconds; NaN if it is not one. */
export function windowSeconds(label) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(label);
  if (!match) return NaN;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[match[2]];
  return Number(match[1]) * unit;
}
