# Sphinx configuration for radiorecon, on top of sphinx-astropy's defaults.
import datetime
import importlib.metadata

from sphinx_astropy.conf.v2 import *  # noqa: F401,F403

project = "radiorecon"
author = "radiorecon developers"
copyright = f"{datetime.date.today().year}, {author}"
release = importlib.metadata.version("radiorecon")
version = release.split("+")[0]

# Builds run without network access (CI included): no inventories are
# fetched, so cross-references to other projects render as plain text.
intersphinx_mapping = {}

exclude_patterns = list(exclude_patterns) + ["_build"]  # noqa: F405
html_theme_options = {
    "github_url": "https://github.com/radiorecon/radiorecon",
    "use_edit_page_button": False,
}
html_title = f"radiorecon {version}"
automodapi_inheritance_diagram = False
automodsumm_inherited_members = False
numpydoc_show_class_members = False
suppress_warnings = list(globals().get("suppress_warnings", [])) + ["config.cache"]
