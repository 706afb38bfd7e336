import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { defineConfig, type Plugin } from "vite";
import react from "@vitejs/plugin-react";

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

// @grafana/ui's <Icon> fetches its SVGs from `/public/build/img/icons/<set>/<name>.svg` (Grafana's
// own static path). They ship in @grafana/ui's dist; copy them to the same path in our dist so
// the embedded server serves them and nothing is fetched from the internet.
function grafanaIcons(): Plugin {
  return {
    name: "pyrite-grafana-icons",
    apply: "build",
    closeBundle() {
      const source = here("node_modules/@grafana/ui/dist/public/img/icons");
      if (!existsSync(source)) throw new Error(`@grafana/ui icons not found at ${source}`);
      cpSync(source, here("dist/public/build/img/icons"), { recursive: true });
      // The few the flame graph asks for that @grafana/ui's dist lacks (Grafana serves them from
      // its own build): drawn for Pyrite in ui/icons, never replacing one of @grafana/ui's.
      cpSync(here("icons"), here("dist/public/build/img/icons"), { recursive: true, force: false });
    },
  };
}

// Writes `<file>.gz` next to every compressible file of 1 KiB or more; the server embeds both
// and sends the gzip copy to browsers that accept it (the entry bundle is ~2.3 MB raw).
function precompress(): Plugin {
  const compressible = /\.(js|mjs|css|html|svg|json)$/;
  const walk = (dir: string): string[] =>
    readdirSync(dir).flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? walk(path) : [path];
    });
  return {
    name: "pyrite-precompress",
    apply: "build",
    closeBundle: {
      order: "post",
      handler() {
        for (const path of walk(here("dist"))) {
          if (!compressible.test(path) || statSync(path).size < 1024) continue;
          writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }));
        }
      },
    },
  };
}

export default defineConfig({
  plugins: [react(), grafanaIcons(), precompress()],
  resolve: {
    alias: [
      // Exactly the bare name: the shim's own import of the package's lib file must not match.
      { find: /^react-custom-scrollbars-2$/, replacement: here("src/shims/react-custom-scrollbars-2.ts") },
    ],
  },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // The Grafana component brings ~2 MB of JavaScript; the warning would be noise on every build.
    chunkSizeWarningLimit: 4096,
  },
});
