"""Call records: what a call left behind (model), what it cost (cost), where records live (store),
and how variants compare (stats)."""
