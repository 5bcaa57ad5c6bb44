"""Export the pretrained encoder to formats other libraries load without this project."""
