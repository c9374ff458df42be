"""VGG19 feature network (torchvision `vgg19().features`), for perceptual losses and an LPIPS-style distance."""
