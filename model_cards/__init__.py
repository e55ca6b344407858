"""Model cards and Hub-ready checkpoint folders (package data ``bridge_stg.model_cards``).

The card templates are the ``*.md`` files of this folder. :func:`bridge_stg.model_cards.hub.save_for_hub`
fills them from the config and the metrics, and writes a complete checkpoint folder (weights, processor,
remote code, pipeline registration, card).
"""
