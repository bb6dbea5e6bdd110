"""The store backends: driver code only (the shaping they share is comparer/records.py)."""
