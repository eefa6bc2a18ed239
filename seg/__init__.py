"""liftseg: semantic segmentation with bidirectional LiftPool."""
