"""RELATE on verl. Importing the package registers the ``relate:`` section's defaults with Hydra
(``relate_config.register_hydra_defaults``) before ``config/relate_trainer.yaml`` is composed."""

from recipe.relate.relate_config import register_hydra_defaults

register_hydra_defaults()
