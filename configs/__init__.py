"""The shipped YAML configs, installed as the package ``spt_configs`` (see setup.py).

A ``--config`` value that is not an existing file is looked up here: ``trainer/tiny``,
``configs/trainer/tiny.yaml`` and, for a command whose default lives in ``configs/trainer/``,
``tiny.yaml`` all name ``configs/trainer/tiny.yaml`` (``infra.config.resolve_config_path``).
"""
