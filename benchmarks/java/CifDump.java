// Reads a CIF file with Bio-Formats (loci.formats.ImageReader), as CellProfiler and
// Doan et al.'s code do, and either times reading every object or prints per-object SHA-256
// digests of the image and mask bytes so that ifcml's decoding can be compared with it.
// Usage: java -cp bioformats_package.jar:. CifDump FILE (time|digest) [MAX_OBJECTS]
import java.security.MessageDigest;
import loci.common.DebugTools;
import loci.formats.ImageReader;

public class CifDump {
    public static void main(String[] args) throws Exception {
        String path = args[0];
        boolean digest = args[1].equals("digest");
        int maxObjects = args.length > 2 ? Integer.parseInt(args[2]) : Integer.MAX_VALUE;
        DebugTools.setRootLevel("ERROR");
        long start = System.nanoTime();
        ImageReader reader = new ImageReader();
        reader.setId(path);
        long opened = System.nanoTime();
        int objects = Math.min(reader.getSeriesCount() / 2, maxObjects);
        long bytes = 0;
        for (int i = 0; i < objects; i++) {
            StringBuilder line = new StringBuilder().append(i);
            for (int s = 2 * i; s <= 2 * i + 1; s++) {
                reader.setSeries(s);
                MessageDigest sha = digest ? MessageDigest.getInstance("SHA-256") : null;
                for (int c = 0; c < reader.getSizeC(); c++) {
                    byte[] plane = reader.openBytes(c);
                    bytes += plane.length;
                    if (sha != null) sha.update(plane);
                }
                if (sha != null) {
                    line.append(' ');
                    for (byte b : sha.digest()) line.append(String.format("%02x", b));
                }
            }
            if (digest) System.out.println(line);
        }
        long done = System.nanoTime();
        reader.close();
        System.err.printf("objects=%d bytes=%d open_s=%.3f read_s=%.3f%n",
            objects, bytes, (opened - start) / 1e9, (done - opened) / 1e9);
    }
}
