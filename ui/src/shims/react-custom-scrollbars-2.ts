// @grafana/ui imports this CommonJS package's default export (`import Scrollbars from …`).
// Under Vite's CommonJS interop the default import is the whole `exports` object (it has
// `__esModule`), not the component, so @grafana/ui would render an object and crash. This shim
// re-exports the component itself; vite.config.ts aliases exactly the bare package name to it.
// @ts-expect-error: the lib file has no declarations of its own (the package's are for its root).
import * as scrollbars from "react-custom-scrollbars-2/lib/index.js";

type Module = { Scrollbars?: unknown; default?: { Scrollbars?: unknown } | unknown };
const module = scrollbars as unknown as Module;
const defaultExport = module.default as { Scrollbars?: unknown } | undefined;
const Scrollbars = (module.Scrollbars ?? defaultExport?.Scrollbars ?? module.default) as never;

export { Scrollbars };
export default Scrollbars;
