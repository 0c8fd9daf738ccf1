"""Fill model_card.md from a model's config (placeholder until the card issue lands)."""

from __future__ import annotations

import json


def render_model_card(config: dict, assets: dict) -> str:
    metrics = json.dumps(config.get("metrics", {}), indent=2)
    return f"# Brain-tumour MRI detector\n\nResearch demo, not a medical device.\n\n```json\n{metrics}\n```\n"
