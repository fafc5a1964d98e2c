"""Print the requirements of pyproject.toml's core plus the named extras, one a line, for `pip install -r`.

The image installs its dependencies from pyproject.toml alone, before the code is copied in, so a code
change rebuilds only the layers after it (docker/Dockerfile)."""
import sys
import tomllib

with open("pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + [req for extra in sys.argv[1:] for req in extras[extra]]))
