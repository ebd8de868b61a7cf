"""`cnnclf review`: find mislabeled, ambiguous, near-duplicate and odd images, and fix them.

The room's modules, in the order a review runs:

    folds.py      stratified K folds of the training rows, written as label files
    ranking.py    confident learning on the out-of-fold probabilities (label, ambiguous)
    neighbours.py near duplicates and outliers in the fold models' embedding space
    issues.py     the `Issue` row and the issues.csv / issues.json files
    gallery.py    the offline index.html a person decides from
    run.py        the review itself: trains the folds, predicts, ranks, writes the folder
    apply.py      a person's decisions.csv applied to the data, with an undo log

Only run.py imports TensorFlow (inside its functions); everything else is plain Python and
NumPy, so ranking and applying decisions are tested in milliseconds.
"""
