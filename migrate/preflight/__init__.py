"""The dry run: host facts (`facts`) -> checks and estimate -> the plan report (`report`),
rendered as text, JSON or markdown (`render`). Everything but the fact gathering is pure."""
