"""Validates the docker-compose deployment without a container engine.

1. docker-compose.yml against the Compose Specification's JSON schema (the
   `compose_spec.json` that docker-compose 1.29.2 ships, fetched from PyPI
   with `pip download`, never installed).
2. What the schema cannot see: every `depends_on` names a service, every
   viewcount service has a healthcheck on /readyz and is configured by
   environment only (no command-line flags), every file it mounts exists,
   every Prometheus target is a service, and Grafana's dashboard queries only
   metric families the product serves (checked against `viewcount up`'s
   /metrics by the Rust test `every_service_passes_promtool_check_metrics`).
3. deploy/prometheus.yml with `promtool check config`.

Usage: python3 scripts/py/check_deploy.py SCHEMA_CACHE_DIR
"""

import glob
import json
import os
import subprocess
import sys
import zipfile

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VIEWCOUNT_COMMANDS = {"ingest", "speed", "archive", "serve", "batch"}


def compose_schema(cache):
    wheels = glob.glob(os.path.join(cache, "docker_compose-1.29.2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--disable-pip-version-check", "docker-compose==1.29.2", "-d", cache],
            check=True)
        wheels = glob.glob(os.path.join(cache, "docker_compose-1.29.2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        return json.loads(z.read("compose/config/compose_spec.json"))


def fail(errors):
    for e in errors:
        print(f"check-deploy: {e}", file=sys.stderr)
    sys.exit(1)


def main():
    cache = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "deploy-check")
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(ROOT, "docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    errors = []
    validator = jsonschema.Draft201909Validator(compose_schema(cache))
    for e in sorted(validator.iter_errors(compose), key=lambda e: list(e.path)):
        errors.append(f"docker-compose.yml at {'/'.join(map(str, e.path)) or '/'}: {e.message}")
    services = compose.get("services", {})
    for name, s in services.items():
        deps = s.get("depends_on", {})
        for d in (deps if isinstance(deps, list) else deps.keys()):
            if d not in services:
                errors.append(f"service {name} depends on {d!r}, which is not a service")
        for v in s.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("./") and not os.path.exists(os.path.join(ROOT, src)):
                errors.append(f"service {name} mounts {src}, which does not exist")
        command = s.get("command") or []
        if s.get("build") and command and command[0] in VIEWCOUNT_COMMANDS:
            if any(a.startswith("-") for a in command):
                errors.append(f"service {name} passes flags {command}; configure by environment only")
            test = (s.get("healthcheck") or {}).get("test", [])
            if "/readyz" not in " ".join(test):
                errors.append(f"service {name} has no healthcheck on /readyz")
            env = s.get("environment", {})
            for key in ("VIEWCOUNT_STORE", "VIEWCOUNT_LISTEN"):
                if key not in env:
                    errors.append(f"service {name} does not set {key}")
    with open(os.path.join(ROOT, "deploy", "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    scraped = set()
    for job in prom.get("scrape_configs", []):
        for sc in job.get("static_configs", []):
            for t in sc.get("targets", []):
                host = t.split(":")[0]
                scraped.add(host)
                if host not in services:
                    errors.append(f"prometheus scrapes {t}, but {host} is not a service")
    for name, s in services.items():
        command = s.get("command") or []
        if s.get("build") and command and command[0] in VIEWCOUNT_COMMANDS and name not in scraped:
            errors.append(f"prometheus does not scrape service {name}")
    with open(os.path.join(ROOT, "deploy", "grafana", "dashboards", "viewcount.json")) as f:
        dashboard = json.load(f)
    if not dashboard.get("panels"):
        errors.append("the Grafana dashboard has no panels")
    if errors:
        fail(errors)
    r = subprocess.run(["promtool", "check", "config", os.path.join(ROOT, "deploy", "prometheus.yml")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail([f"promtool check config: {r.stdout}{r.stderr}"])
    print(f"check-deploy: docker-compose.yml valid against the Compose Specification schema "
          f"({len(services)} services), deploy/prometheus.yml passes promtool "
          f"({len(scraped)} scraped services), dashboard has {len(dashboard['panels'])} panels")


if __name__ == "__main__":
    main()
