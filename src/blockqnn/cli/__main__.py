from blockqnn.cli import entry

# Guarded: worker processes started with "spawn" may import the main module again.
if __name__ == "__main__":
    entry()
