//! Visiodroits/AMC rights proxy (issue #7).
