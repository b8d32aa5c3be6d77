"""What a deployed model answers, against what it answered when its operating point was chosen:
the bins, the drift reference and its verdict.

Imports the shared ground only.
"""
