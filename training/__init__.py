"""Training Bridge-STG: the Trainer subclass, LoRA, the recipes behind ``bridge-stg train`` and ``bridge-stg demo
--train``, tiny backbones for CPU runs, and the one path that grounds a data set and scores it.
"""
