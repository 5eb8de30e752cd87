"""audiotext: speech emotion recognition from what is heard (MFCC) and what is said (BERT)."""

__version__ = "0.1.0"
