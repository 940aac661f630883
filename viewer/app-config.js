/** @type {AppTypes.Config} */
// OHIF v3 configuration for viewing cdss results stored in Orthanc (DICOMweb plugin).
//
// The viewer and Orthanc are served from ONE origin (viewer/serve.py, or nginx with the same
// rules): OHIF's files at /, Orthanc's DICOMweb API at /dicom-web and WADO-URI at /wado.
// So every root below is a same-origin path: no CORS, no CDN, nothing fetched from the internet.
// How a cdss TID 1500 SR measurement group is shown (OHIF's `onBeforeSRAddMeasurement` hook):
//
// 1. OHIF 3.13.2 aborts loading a whole SR when one measurement group has no spatial
//    coordinates (extensions/cornerstone-dicom-sr `_checkIfCanAddMeasurementsToDisplaySet` reads
//    `measurement.coords[0].ReferencedSOPSequence` unguarded). cdss SRs have such groups on
//    purpose (the spondylolisthesis summary, the vertebra detection confidences, levels not
//    measured). They get an empty coordinate, so OHIF skips them instead of failing; every group
//    with a SCOORD still shows.
// 2. Labels, cosmetic only (the SR is unchanged): OHIF prints a Finding Site under the SNOMED
//    concept id ("363698007: L4 vertebra"), shown as "Finding site: L4 vertebra"; and a comment
//    (the group's finding in words, DCM 121106) as "<text>: ", shown as "L5-S1: anterolisthesis
//    38.0 % - Meyerding II". Stock OHIF shows the same words with those two quirks.
function cdssMeasurement(measurement) {
  const labels = (measurement.labels || []).map(entry => {
    if (entry.label === '363698007') {
      return { ...entry, label: 'Finding site' };
    }
    const text = String(entry.label || '');
    const space = text.indexOf(' ');
    if (entry.value === '' && space > 0) {
      return { label: text.slice(0, space), value: text.slice(space + 1) };
    }
    return entry;
  });
  // Changed in place: OHIF keeps using the object it passed in (its display set holds it, and it
  // marks that object loaded and records its image); a copy would never be drawn.
  measurement.labels = labels;
  if (!measurement.coords || !measurement.coords.length) {
    measurement.coords = [{}];
  }
  renderSoon();
  return measurement;
}

// 3. OHIF 3.13.2 adds an SR's annotations to cornerstone3D without making sure the viewport
//    draws them: on most first opens of a cdss SR here the image is shown and the annotations
//    are in cornerstone's state on that very image, but nothing is drawn until the next render
//    (a scroll, a window/level drag). A render right after the groups are added is too early
//    (measured: still nothing drawn 3 s later). So for up to 10 s after an SR's groups are added,
//    every 250 ms: a viewport whose current image has SR annotations but no annotation drawn is
//    rendered again. Drawing only; nothing about the SR changes. (tests/test_viewer.py opens the
//    SR with no interaction, so it fails if this stops working.)
let srWatch = null;
function renderSoon() {
  const started = performance.now();
  if (srWatch) {
    srWatch.started = started;
    return;
  }
  srWatch = { started };
  const timer = setInterval(() => {
    const cs = window.cornerstone;
    const tools = window.cornerstoneTools;
    if (!cs || !tools || performance.now() - srWatch.started > 10000) {
      clearInterval(timer);
      srWatch = null;
      return;
    }
    const annotations = tools.annotation.state.getAllAnnotations();
    for (const engine of cs.getRenderingEngines()) {
      for (const viewport of engine.getViewports()) {
        const imageId = viewport.getCurrentImageId && viewport.getCurrentImageId();
        const onImage = annotations.some(
          a => a.metadata.toolName === 'DICOMSRDisplay' && a.metadata.referencedImageId === imageId
        );
        if (imageId && onImage && !viewport.element.querySelector('svg text')) {
          viewport.render();
        }
      }
    }
  }, 250);
}

window.config = {
  name: 'cdss/viewer/app-config.js',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {
    // No onboarding tour: it would cover the viewport (and screenshots) on first visit.
    'ohif.tours': [],
    // Called by OHIF 3.13.2 for every SR measurement group before it is drawn (docs/viewer.md).
    onBeforeSRAddMeasurement: ({ measurement }) => cdssMeasurement(measurement),
  },
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  // Tour pop-ups ("Welcome to OHIF") would cover the viewport in screenshots.
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 10 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'orthanc',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'orthanc',
      configuration: {
        friendlyName: 'Orthanc (cdss PACS)',
        name: 'orthanc',
        wadoUriRoot: '/wado',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        supportsReject: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
  httpErrorHandler: error => {
    console.warn('cdss viewer: DICOMweb request failed', error.status);
  },
};
