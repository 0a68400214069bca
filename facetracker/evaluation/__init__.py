"""How good a model is: box overlap, every-face matching and AP, the end-of-run verdict, and `bench`."""
