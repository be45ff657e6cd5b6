"""napari plugin (``pip install "nucleiseg[napari]"``): the "Segment nuclei" and "Fine-tune on these labels"
dock widgets, sample images and a reader that opens nucleiseg label TIFFs as Labels layers.

napari is imported only by the modules of this subpackage, never by the rest of nucleiseg.
"""
