"""Model card templates of Bridge-STG checkpoints (package data ``bridge_stg.model_cards``).

The templates are the ``*.md`` files of this folder; read them with
:func:`bridge_stg.commands._assets.model_card_template` and fill them with
:func:`bridge_stg.hub_bridge_stg.save_for_hub`.
"""
