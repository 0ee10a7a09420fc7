# Dify "Code" node (Python 3): the time now, in epoch milliseconds (output variable `now`, Number).
# Place one before the node to time and one after it; the Template node sends both.
import time


def main() -> dict:
    return {"now": int(time.time() * 1000)}
