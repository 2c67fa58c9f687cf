"""Write ifc_cells.cppipe with CellProfiler's own API (run with CellProfiler 4.2's Python).

    ~/.cache/ifcml/cellprofiler-4.2.8.1/bin/python pipelines/make_ifc_cells.py

The pipeline measures what ``features/default.yaml`` asks of the cp-measure engine, on the
montages and label images that ``ifcml features --engine cellprofiler`` writes per chunk:
``<chunk>_BF.tif``, ``<chunk>_DF.tif`` (uint16), ``<chunk>_Cells.tif`` and
``<chunk>_CellsExpanded.tif`` (uint16 labels). Bright-field is measured on ``Cells``,
dark-field on ``CellsExpanded``; granularity is unsubsampled so no cell sees its neighbours.
Keep both in step: the engine-agreement test compares them.
"""

from pathlib import Path

import cellprofiler_core.preferences

cellprofiler_core.preferences.set_headless()

from cellprofiler.modules.exporttospreadsheet import ExportToSpreadsheet  # noqa: E402
from cellprofiler.modules.measurecolocalization import MeasureColocalization  # noqa: E402
from cellprofiler.modules.measuregranularity import MeasureGranularity  # noqa: E402
from cellprofiler.modules.measureobjectintensity import MeasureObjectIntensity  # noqa: E402
from cellprofiler.modules.measureobjectintensitydistribution import (  # noqa: E402
    MeasureObjectIntensityDistribution,
)
from cellprofiler.modules.measureobjectsizeshape import MeasureObjectSizeShape  # noqa: E402
from cellprofiler.modules.measuretexture import MeasureTexture  # noqa: E402
from cellprofiler_core.modules.groups import Groups  # noqa: E402
from cellprofiler_core.modules.images import Images  # noqa: E402
from cellprofiler_core.modules.metadata import Metadata  # noqa: E402
from cellprofiler_core.modules.namesandtypes import NamesAndTypes  # noqa: E402
from cellprofiler_core.pipeline import Pipeline  # noqa: E402

MEASURED_ON = {"BF": "Cells", "DF": "CellsExpanded"}


def input_modules() -> list:
    images = Images()
    metadata = Metadata()
    metadata.wants_metadata.value = True
    method = metadata.extraction_methods[0]
    method.file_regexp.value = r"^(?P<Chunk>[0-9]+)_(?P<Name>[A-Za-z]+)\.tif$"
    names = NamesAndTypes()
    names.assignment_method.value = "Images matching rules"
    names.matching_choice.value = "Metadata"
    names.assignments.clear()
    for name in [*MEASURED_ON, "Cells", "CellsExpanded"]:
        names.add_assignment()
        group = names.assignments[-1]
        group.rule_filter.value = f'and (file does endwith "_{name}.tif")'
        if name in MEASURED_ON:
            group.image_name.value = name
            group.load_as_choice.value = "Grayscale image"
            group.rescale.value = "Image bit-depth"  # uint16 -> value / 65535, as cp-measure gets it
        else:
            group.object_name.value = name
            group.load_as_choice.value = "Objects"
    names.join.build([{name: "Chunk" for name in [*MEASURED_ON, "Cells", "CellsExpanded"]}])
    return [images, metadata, names, Groups()]


def measurement_modules() -> list:
    shape = MeasureObjectSizeShape()
    shape.objects_list.value = "Cells"
    shape.calculate_zernikes.value = True
    shape.calculate_advanced.value = True
    modules = [shape]
    for image, objects in MEASURED_ON.items():
        intensity = MeasureObjectIntensity()
        intensity.images_list.value = image
        intensity.objects_list.value = objects
        texture = MeasureTexture()
        texture.images_list.value = image
        texture.objects_list.value = objects
        texture.images_or_objects.value = "Objects"
        texture.gray_levels.value = 256
        texture.scale_groups[0].scale.value = 3
        granularity = MeasureGranularity()
        granularity.images_list.value = image
        granularity.wants_objects.value = True
        granularity.objects_list.value = objects
        granularity.subsample_size.value = 1.0
        granularity.image_sample_size.value = 1.0
        granularity.element_size.value = 10
        granularity.granular_spectrum_length.value = 16
        radial = MeasureObjectIntensityDistribution()
        radial.images_list.value = image
        radial.objects[0].object_name.value = objects
        radial.objects[0].center_choice.value = "These objects"
        radial.bin_counts[0].bin_count.value = 4
        radial.bin_counts[0].wants_scaled.value = True
        radial.wants_zernikes.value = "Magnitudes and phase"
        radial.zernike_degree.value = 9
        modules += [intensity, texture, granularity, radial]
    colocalization = MeasureColocalization()
    colocalization.images_list.value = ", ".join(MEASURED_ON)
    colocalization.images_or_objects.value = "Within objects"
    colocalization.objects_list.value = "Cells"
    colocalization.thr.value = 15.0
    colocalization.do_all.value = False
    colocalization.do_corr_and_slope.value = True
    colocalization.do_manders.value = True
    colocalization.do_rwc.value = True
    colocalization.do_overlap.value = False
    colocalization.do_costes.value = False
    return modules + [colocalization]


def export_module() -> ExportToSpreadsheet:
    export = ExportToSpreadsheet()
    export.directory.value = "Default Output Folder|"
    export.wants_prefix.value = False
    export.wants_everything.value = True
    export.nan_representation.value = "NaN"
    return export


def main() -> None:
    pipeline = Pipeline()
    for number, module in enumerate([*input_modules(), *measurement_modules(), export_module()], start=1):
        module.set_module_num(number)
        pipeline.add_module(module)
    out = Path(__file__).with_name("ifc_cells.cppipe")
    with out.open("w") as fp:
        pipeline.dump(fp, save_image_plane_details=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
