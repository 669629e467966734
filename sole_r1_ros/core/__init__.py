"""The core of an episode and its scoring: composite, protocol, parser, goal, scorer, reward, statuses."""
