"""Loads each dashboard JSON (paths as arguments) into Grafana's own dashboard model
(grafana-foundation-sdk) and prints, as JSON, the keys of each that the model does not know:
those that do not survive a round trip through the model."""

import json
import sys

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard


def lost(original, round_tripped, path=""):
    missing = []
    if isinstance(original, dict):
        if not isinstance(round_tripped, dict):
            return [path or "/"]
        for key, value in original.items():
            if key not in round_tripped:
                missing.append(f"{path}/{key}")
            else:
                missing += lost(value, round_tripped[key], f"{path}/{key}")
    elif isinstance(original, list) and isinstance(round_tripped, list):
        for i, (a, b) in enumerate(zip(original, round_tripped)):
            missing += lost(a, b, f"{path}/{i}")
    return missing


result = {}
for file in sys.argv[1:]:
    with open(file) as f:
        original = json.load(f)
    model = Dashboard.from_json(original)
    round_tripped = json.loads(JSONEncoder(sort_keys=True).encode(model))
    result[file] = lost(original, round_tripped)
print(json.dumps(result))
