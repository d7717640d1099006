// The plugin's routes (keras_lstm/tensorboard/plugin.py). The page's document
// has its <base> at the plugin's data path, so `./route` is
// /data/plugin/lstm_gates/route.

// New epochs appear while a run trains: ask for the list again this often.
export const POLL_SECONDS = 30;

// Data answers: one cached promise per URL; a small LRU keeps memory bounded.
const CACHE_SIZE = 96;
const cache = new Map();

async function answer(route, response) {
  if (!response.ok) {
    const text = (await response.text()).trim();
    throw new Error(`${route}: ${response.status} ${text}`);
  }
  return response.json();
}

/** The JSON answer of `route?params`, from the cache when asked before. */
export function getJSON(route, params) {
  const url = `./${route}?${new URLSearchParams(params)}`;
  let promise = cache.get(url);
  if (promise) {
    cache.delete(url);
    cache.set(url, promise);
    return promise;
  }
  promise = fetch(url).then((response) => answer(route, response));
  promise.catch(() => cache.delete(url));
  cache.set(url, promise);
  while (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value);
  return promise;
}

/** Drops the cached answers of `route` (they change as a run grows). */
export function forgetCached(route) {
  for (const url of [...cache.keys()]) if (url.startsWith(`./${route}?`)) cache.delete(url);
}

/** `data` with `labels` as strings and a `mask` (all true when none came). */
export function withSteps(data) {
  const labels = (data.labels || []).map((l) => (l === null || l === undefined ? "" : String(l)));
  const mask = Array.isArray(data.mask) ? data.mask : labels.map(() => true);
  return { ...data, labels, mask };
}

/** What the page draws with, from keras_lstm/tensorboard/palette.py. */
export async function fetchConstants() {
  return answer("constants", await fetch("./constants"));
}

/** `{run: {layers: {layer: info}}}` of the runs with gate data, from the server. */
export async function fetchRuns() {
  const all = await answer("runs", await fetch("./runs", { cache: "no-store" }));
  const runs = {};
  for (const [run, info] of Object.entries(all.runs || {})) {
    const layers = Object.entries(info.layers || {}).filter(([, l]) => l.steps && l.steps.length);
    if (layers.length) runs[run] = { layers: Object.fromEntries(layers) };
  }
  return runs;
}
