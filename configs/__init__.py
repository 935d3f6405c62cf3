"""The YAML configs shipped with metarl (one per benchmark); ``metarl config`` lists them."""
