"""Package list for setuptools; everything else is in pyproject.toml.

The shipped configs (``configs/``) are installed as the package ``spt_configs`` (its YAML files are
package data), so that the console scripts find ``--config trainer/tiny`` outside a checkout
(``infra.config.resolve_config_path``).
"""

from setuptools import find_namespace_packages, find_packages, setup

CODE = find_packages(include=["infra*", "datagen*", "trainer*", "evalkit*", "launch*"])
CONFIGS = ["spt_configs", *(f"spt_configs.{p}" for p in find_namespace_packages(where="configs"))]

setup(packages=CODE + CONFIGS, package_dir={"spt_configs": "configs"})
