"""GalleryBuilder: the trained model plus a gallery of enrolled identities and `identify`."""
