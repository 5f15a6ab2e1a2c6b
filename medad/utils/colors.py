"""Display colours shared by exports, the gallery and reports, so a contour means the same everywhere."""

PRED_CONTOUR = "#00ffff"
GT_CONTOUR = "#ff00ff"
HEATMAP_CMAP = "inferno"
