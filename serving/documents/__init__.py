"""Documents translated whole: a file's texts taken out, translated, and put back where they were."""
