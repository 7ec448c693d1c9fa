"""`python -m g2vlm fit|validate|test|predict ...` is the `lightning` console script."""

from g2vlm.cli import main

if __name__ == "__main__":
    main()
