
namespace Pai.Host.Tests;

/// <summary>Tiny ImageNet and ImageNet folders written by the tests: layout, labels, pixels, augmentation, errors.</summary>
public class ImageFolderTests
{
    // Unsorted on purpose: the class order must be the sorted one.
    static readonly string[] Wnids = ["n03000003", "n01000001", "n02000002"];
    static readonly string[] Sorted = ["n01000001", "n02000002", "n03000003"];
    // The normalization every ImageNet loader here uses.
    static readonly DatasetInfo ImageNetInfo = DatasetRegistry.Info("imagenet");

    // The flat colour of image k of class c: distinct for every (class, image).
    static (byte R, byte G, byte B) Colour(int c, int k) => ((byte)(40 + 60 * c), (byte)(30 + 50 * k), (byte)(200 - 30 * c - 20 * k));

    static RgbImage Flat(int width, int height, (byte R, byte G, byte B) rgb)
    {
        var pixels = new byte[width * height * 3];
        for (var i = 0; i < pixels.Length; i += 3) (pixels[i], pixels[i + 1], pixels[i + 2]) = rgb;
        return new RgbImage(width, height, pixels);
    }

    // A textured image (gradients + a checker) so crops and flips change the pixels.
    static RgbImage Textured(int width, int height, int seed)
    {
        var pixels = new byte[width * height * 3];
        for (var y = 0; y < height; y++)
            for (var x = 0; x < width; x++)
            {
                var o = (y * width + x) * 3;
                pixels[o] = (byte)(255 * x / width);
                pixels[o + 1] = (byte)(255 * y / height);
                pixels[o + 2] = (byte)((((x / 8) + (y / 8) + seed) % 2) * 200);
            }
        return new RgbImage(width, height, pixels);
    }

    static void Write(string path, RgbImage image)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, Jpeg.Encode(image, 95));
    }

    // Tiny ImageNet layout: 3 classes × 3 training images, 2 val images per class, 64×64.
    static void WriteTiny(string root)
    {
        File.WriteAllLines(Path.Combine(root, "wnids.txt"), Wnids);
        var annotations = new List<string>();
        var v = 0;
        foreach (var wnid in Wnids)
        {
            var c = Array.IndexOf(Sorted, wnid);
            for (var k = 0; k < 3; k++)
                Write(Path.Combine(root, "train", wnid, "images", $"{wnid}_{k}.JPEG"), Flat(64, 64, Colour(c, k)));
            File.WriteAllText(Path.Combine(root, "train", wnid, $"{wnid}_boxes.txt"), "not an image\n");
            for (var k = 0; k < 2; k++, v++)
            {
                Write(Path.Combine(root, "val", "images", $"val_{v}.JPEG"), Flat(64, 64, Colour(c, k)));
                annotations.Add($"val_{v}.JPEG\t{wnid}\t0\t0\t63\t63");
            }
        }
        File.WriteAllLines(Path.Combine(root, "val", "val_annotations.txt"), annotations);
    }

    // ImageNet layout: 3 classes, textured images of assorted sizes.
    static void WriteImageNet(string root, int perClass = 3)
    {
        foreach (var split in new[] { "train", "val" })
            foreach (var wnid in Wnids)
            {
                var c = Array.IndexOf(Sorted, wnid);
                for (var k = 0; k < perClass; k++)
                    Write(Path.Combine(root, split, wnid, $"{wnid}_{k}.JPEG"), k == 0 ? Flat(90 + 10 * c, 70, Colour(c, k)) : Textured(80 + 17 * k, 60 + 9 * c, k));
            }
    }

    static void Truncate(string path) => Bytes.Truncate(path, ..300);

    // Patches a valid JPEG's frame header (SOF0: FFC0, length (2), precision (1), height (2), width (2))
    // to claim width × height; the scan still holds the small image.
    static void ClaimSize(string path, int width, int height)
    {
        var bytes = File.ReadAllBytes(path);
        var i = 2; // after SOI
        while (!(bytes[i] == 0xFF && bytes[i + 1] == 0xC0)) i += 2 + (bytes[i + 2] << 8 | bytes[i + 3]);
        (bytes[i + 5], bytes[i + 6], bytes[i + 7], bytes[i + 8]) = ((byte)(height >> 8), (byte)height, (byte)(width >> 8), (byte)width);
        File.WriteAllBytes(path, bytes);
    }

    [Fact]
    public void Jpeg_round_trip_is_within_jpeg_tolerance()
    {
        var image = Textured(48, 40, 1);
        var decoded = Jpeg.Decode(Jpeg.Encode(image, 95), "mem.jpg");
        Assert.Equal((48, 40), (decoded.Width, decoded.Height));
        var diffs = image.Pixels.Zip(decoded.Pixels, (a, b) => Math.Abs(a - b)).ToArray();
        Assert.True(diffs.Average() < 3.0, $"mean abs error {diffs.Average()}");
        var flat = Jpeg.Decode(Jpeg.Encode(Flat(16, 16, (10, 120, 250)), 95), "flat.jpg");
        Assert.All(Enumerable.Range(0, 256), i => Assert.InRange(flat.Pixels[3 * i + 1], 118, 122));
        var half = Jpeg.Decode(Jpeg.Encode(Textured(160, 120, 0), 90), "big.jpg", minSide: 60);
        Assert.Equal((80, 60), (half.Width, half.Height)); // decoded at 1/2 in the DCT domain
    }

    [Fact]
    public void Cmyk_jpegs_decode_to_the_rgb_pil_gives()
    {
        using var dir = new TempDirectory();
        var file = dir.File("cmyk.jpg");
        // PIL writes Adobe (inverted) CMYK and converts back with R = (255 − C)(255 − K)/255.
        var rgb = Python.Run("""
            import sys
            from PIL import Image
            Image.new("CMYK", (16, 16), (30, 200, 60, 40)).save(sys.argv[1], quality=95)
            print(*Image.open(sys.argv[1]).convert("RGB").getpixel((5, 5)))
            """, file).Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToArray();
        var image = Jpeg.Decode(File.ReadAllBytes(file), file);
        Assert.Equal((16, 16), (image.Width, image.Height));
        for (var c = 0; c < 3; c++) Assert.InRange(image.Pixels[image.Offset(5, 5) + c], rgb[c] - 3, rgb[c] + 3);
    }

    [Fact]
    public void Tiny_imagenet_classes_are_sorted_wnids_and_labels_and_pixels_match()
    {
        using var dir = new TempDirectory();
        var root = Path.Combine(dir.Path, "tiny-imagenet-200"); // as the zip unpacks
        Directory.CreateDirectory(root);
        WriteTiny(root);
        using var train = DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, root);
        var folder = ImageFolder.TinyImageNet(root, DatasetSplit.Train, "");
        Assert.Equal(Sorted, folder.Classes);
        Assert.Equal(9, train.Count);
        Assert.Equal(3, train.NumClasses);
        Assert.Equal([3, 64, 64], train.InputShape);
        Assert.Equal([0L, 0, 0, 1, 1, 1, 2, 2, 2], train.LabelArray());
        var pixels = train.Images.ToArray<byte>();
        for (var i = 0; i < 9; i++)
        {
            var (r, g, b) = Colour(i / 3, i % 3);
            var plane = 64 * 64;
            Assert.InRange(pixels[i * 3 * plane + 100], r - 3, r + 3);
            Assert.InRange(pixels[i * 3 * plane + plane + 100], g - 3, g + 3);
            Assert.InRange(pixels[i * 3 * plane + 2 * plane + 100], b - 3, b + 3);
        }
        using var val = DatasetRegistry.Load("tinyimagenet", DatasetSplit.Test, dir.Path); // the parent is found too
        Assert.Equal([0L, 0, 1, 1, 2, 2], val.LabelArray());
        var v = val.Images.ToArray<byte>();
        Assert.InRange(v[3 * 64 * 64 * 5 + 7], Colour(2, 1).R - 3, Colour(2, 1).R + 3);
    }

    [Fact]
    public void Imagenet_loader_labels_follow_sorted_class_folders_and_eval_pixels_are_normalized()
    {
        using var dir = new TempDirectory();
        WriteImageNet(dir.Path);
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Test, dir.Path);
        Assert.Equal(Sorted, folder.Classes);
        Assert.All(folder.Samples, s => Assert.StartsWith(Path.Combine(dir.Path, "val", Sorted[s.Label]), s.File));
        var loader = new ImageFolderLoader(folder, 4, ImagePipeline.Eval, ImageNetInfo.Mean, ImageNetInfo.Std, size: 32, shuffle: false, threads: 2);
        var labels = new List<long>();
        var seenFlat = 0;
        foreach (var batch in loader.Epoch(0))
        {
            using var scope = new DisposeScope();
            Assert.Equal(3, batch.Inputs.Size(1));
            Assert.Equal(32, batch.Inputs.Size(2));
            Assert.Equal(32, batch.Inputs.Size(3));
            var l = batch.Targets.ToArray<long>();
            var x = batch.Inputs.ToArray<float>();
            for (var i = 0; i < l.Length; i++)
            {
                var sample = labels.Count + i;
                if (sample % 3 != 0) continue; // image 0 of each class is flat
                var (r, _, b) = Colour((int)l[i], 0);
                var red = x[i * 3 * 1024 + 500];
                var blue = x[i * 3 * 1024 + 2 * 1024 + 500];
                Assert.InRange(red, (float)((r - 3) / 255.0 - ImageNetInfo.Mean[0]) / ImageNetInfo.Std[0], (float)((r + 3) / 255.0 - ImageNetInfo.Mean[0]) / ImageNetInfo.Std[0]);
                Assert.InRange(blue, (float)((b - 3) / 255.0 - ImageNetInfo.Mean[2]) / ImageNetInfo.Std[2], (float)((b + 3) / 255.0 - ImageNetInfo.Mean[2]) / ImageNetInfo.Std[2]);
                seenFlat++;
            }
            labels.AddRange(l);
            batch.Inputs.Dispose();
            batch.Targets.Dispose();
        }
        Assert.Equal([0L, 0, 0, 1, 1, 1, 2, 2, 2], labels);
        Assert.Equal(3, seenFlat);
    }

    static List<float[]> Run(ImageFolderLoader loader, int epoch)
    {
        var result = new List<float[]>();
        foreach (var batch in loader.Epoch(epoch))
        {
            result.Add(batch.Inputs.ToArray<float>());
            batch.Inputs.Dispose();
            batch.Targets.Dispose();
        }
        return result;
    }

    [Fact]
    public void Train_augmentation_is_seeded_reproducible_and_independent_of_thread_count()
    {
        using var dir = new TempDirectory();
        WriteImageNet(dir.Path);
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, dir.Path);
        ImageFolderLoader Make(ulong seed, int threads) => new(folder, 4, ImagePipeline.Train, ImageNetInfo.Mean, ImageNetInfo.Std, size: 24, seed: seed, threads: threads, prefetch: 1);
        var a = Run(Make(5, 1), 0);
        Assert.Equal(3, a.Count); // 9 images in batches of 4
        Assert.Equal(a, Run(Make(5, 2), 0));
        Assert.Equal(a, Run(Make(5, 3), 0));
        Assert.NotEqual(a, Run(Make(6, 2), 0));
        Assert.NotEqual(a, Run(Make(5, 2), 1));
    }

    [Fact]
    public void Random_resized_crop_boxes_respect_scale_and_ratio_and_eval_box_matches_torchvision()
    {
        var random = new SampleRandom(1, 0, 0);
        var inRange = 0;
        for (var i = 0; i < 2000; i++)
        {
            var box = ImageTransforms.RandomResizedCropBox(500, 375, ref random);
            Assert.True(box.X >= 0 && box.Y >= 0 && box.X + box.Width <= 500 && box.Y + box.Height <= 375, $"{box}");
            var scale = box.Width * box.Height / (500.0 * 375);
            var ratio = box.Width / box.Height;
            if (scale >= 0.079 && scale <= 1.0 && ratio >= 0.74 && ratio <= 1.35) inRange++;
        }
        Assert.True(inRange >= 1990, $"{inRange} of 2000 boxes in range");
        // torchvision: Resize(256) makes 500×375 into 341×256; CenterCrop(224) starts at round(58.5) = 58, round(16) = 16.
        var eval = ImageTransforms.ResizeCenterCropBox(500, 375, 256, 224);
        Assert.Equal(58 * 500.0 / 341, eval.X, 9);
        Assert.Equal(16 * 375.0 / 256, eval.Y, 9);
        Assert.Equal(224 * 500.0 / 341, eval.Width, 9);
    }

    [Fact]
    public void A_truncated_jpeg_is_an_error_naming_the_file_unless_skipped_with_a_count()
    {
        using var dir = new TempDirectory();
        WriteTiny(dir.Path);
        var bad = Path.Combine(dir.Path, "train", Sorted[1], "images", $"{Sorted[1]}_2.JPEG");
        Truncate(bad);
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, dir.Path));
        Assert.Equal(bad, e.File);
        Assert.Contains(bad, e.Message);
        Assert.Contains("--skip-bad-images", e.Message);
        using var skipped = DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, dir.Path, skipBadImages: true);
        Assert.Equal(8, skipped.Count);
        Assert.Equal([bad], skipped.SkippedFiles);
        Assert.Equal([0L, 0, 0, 1, 1, 2, 2, 2], skipped.LabelArray());

        var notJpeg = Path.Combine(dir.Path, "train", Sorted[0], "images", $"{Sorted[0]}_0.JPEG");
        File.WriteAllText(notJpeg, "<html>not a jpeg</html>");
        var e2 = Assert.Throws<DatasetException>(() => Jpeg.Decode(File.ReadAllBytes(notJpeg), notJpeg));
        Assert.Equal(notJpeg, e2.File);
    }

    [Fact]
    public void The_streaming_loader_fails_on_a_bad_file_or_skips_and_counts_it()
    {
        using var dir = new TempDirectory();
        WriteImageNet(dir.Path);
        var bad = Path.Combine(dir.Path, "train", Sorted[2], $"{Sorted[2]}_1.JPEG");
        Truncate(bad);
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, dir.Path);
        var strict = new ImageFolderLoader(folder, 4, ImagePipeline.Train, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, shuffle: false, threads: 2);
        var e = Assert.Throws<DatasetException>(() => Run(strict, 0));
        Assert.Equal(bad, e.File);
        var lenient = new ImageFolderLoader(folder, 4, ImagePipeline.Train, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, shuffle: false, threads: 2, skipBadImages: true);
        var batches = Run(lenient, 0);
        Assert.Equal(8 * 3 * 16 * 16, batches.Sum(b => b.Length));
        Assert.Equal([bad], lenient.SkippedFiles.Keys);
    }

    [Fact]
    public void A_jpeg_whose_header_claims_65000_by_65000_pixels_is_a_bad_image_in_memory_and_streamed()
    {
        const string claim = "its header claims 65000×65000 pixels";
        using var tiny = new TempDirectory();
        WriteTiny(tiny.Path);
        var bad = Path.Combine(tiny.Path, "train", Sorted[1], "images", $"{Sorted[1]}_0.JPEG");
        ClaimSize(bad, 65000, 65000);
        var decode = Assert.Throws<DatasetException>(() => Jpeg.Decode(File.ReadAllBytes(bad), bad, minSide: 256));
        Assert.Equal(bad, decode.File);
        Assert.Contains(claim, decode.Message);
        // The bound is on pixels, not sides: a 20000×1000 panorama is believed, and its short scan is what fails.
        ClaimSize(bad, 20000, 1000);
        Assert.DoesNotContain("header claims", Assert.Throws<DatasetException>(() => Jpeg.Decode(File.ReadAllBytes(bad), bad)).Message);
        ClaimSize(bad, 65000, 65000);

        var strict = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, tiny.Path));
        Assert.Equal(bad, strict.File);
        Assert.Contains(claim, strict.Message);
        Assert.Contains("--skip-bad-images", strict.Message);
        using (var skipped = DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, tiny.Path, skipBadImages: true))
        {
            Assert.Equal([bad], skipped.SkippedFiles);
            Assert.Equal([0L, 0, 0, 1, 1, 2, 2, 2], skipped.LabelArray());
        }

        using var net = new TempDirectory();
        WriteImageNet(net.Path);
        var big = Path.Combine(net.Path, "train", Sorted[0], $"{Sorted[0]}_2.JPEG");
        ClaimSize(big, 65000, 65000);
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, net.Path);
        foreach (var pipeline in new[] { ImagePipeline.Train, ImagePipeline.Eval }) // full size, and DCT-scaled
        {
            var e = Assert.Throws<DatasetException>(() => Run(new ImageFolderLoader(folder, 4, pipeline, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, threads: 2), 0));
            Assert.Equal(big, e.File);
            Assert.Contains(claim, e.Message);
            var lenient = new ImageFolderLoader(folder, 4, pipeline, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, threads: 2, skipBadImages: true);
            Assert.Equal(8 * 3 * 16 * 16, Run(lenient, 0).Sum(b => b.Length));
            Assert.Equal([big], lenient.SkippedFiles.Keys);
            Assert.Contains(claim, lenient.SkippedFiles[big]);
        }

        // The command line: a one-line error naming the file, exit code 2, and nothing written.
        using var work = new TempDirectory();
        var (code, stdout, stderr) = CliEndToEndTests.RunIn(work.Path, "train", "-m", "lenet5", "-d", "tinyimagenet", "--data", tiny.Path, "-e", "1", "--max-batches", "1");
        Assert.True(code == 2, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains($"{bad}: cannot decode the image: {claim}", stderr);
        Assert.DoesNotContain("Exception", stderr);
        Assert.Empty(Directory.EnumerateFileSystemEntries(work.Path));
    }

    [Fact]
    public void A_tiny_imagenet_split_too_large_for_one_array_is_refused_before_decoding()
    {
        using var dir = new TempDirectory();
        WriteTiny(dir.Path);
        // 174763 images of 64×64×3 bytes are one more than an array holds.
        File.WriteAllLines(Path.Combine(dir.Path, "val", "val_annotations.txt"), Enumerable.Repeat($"val_0.JPEG\t{Wnids[0]}\t0\t0\t63\t63", 174_763));
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("tinyimagenet", DatasetSplit.Test, dir.Path));
        Assert.StartsWith("tinyimagenet: the val split lists 174763 images, 2147487744 bytes decoded at 64×64, more than one in-memory array holds", e.Message);
        Assert.Equal(Path.Combine(dir.Path, "val"), e.File);
    }

    [Fact]
    public void A_split_whose_every_image_is_skipped_is_refused_with_one_message_in_memory_and_streamed()
    {
        using var tiny = new TempDirectory();
        WriteTiny(tiny.Path);
        foreach (var f in Directory.GetFiles(Path.Combine(tiny.Path, "val", "images"))) Truncate(f);
        var memory = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("tinyimagenet", DatasetSplit.Test, tiny.Path, skipBadImages: true));
        Assert.StartsWith("tinyimagenet: none of the 6 images read from the val split could be decoded (--skip-bad-images skipped every one); first: ", memory.Message);
        Assert.Equal(ImageFolder.TinyImageNet(tiny.Path, DatasetSplit.Test, "").Samples[0].File, memory.File); // the first in sample order

        using var net = new TempDirectory();
        WriteImageNet(net.Path);
        foreach (var f in Directory.GetFiles(Path.Combine(net.Path, "train"), "*.JPEG", SearchOption.AllDirectories)) Truncate(f);
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, net.Path);
        var loader = new ImageFolderLoader(folder, 4, ImagePipeline.Train, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, seed: 1, threads: 2, skipBadImages: true);
        var streamed = Assert.Throws<DatasetException>(() => Run(loader, 0));
        Assert.StartsWith("imagenet: none of the 9 images read from the train split could be decoded (--skip-bad-images skipped every one); first: ", streamed.Message);
        Assert.Equal(folder.Samples[0].File, streamed.File);
        Assert.Contains($"; first: {folder.Samples[0].File}: cannot decode the image: ", streamed.Message);

        // A run says so before any training step, instead of a NaN loss blamed on the learning rate.
        using var work = new TempDirectory();
        var (code, stdout, stderr) = CliEndToEndTests.RunIn(work.Path, "train", "-m", "resnet20", "-d", "imagenet", "--data", net.Path, "--skip-bad-images",
            "-e", "1", "--max-batches", "2", "--batch-size", "4", "--threads", "2");
        Assert.True(code == 2, $"exit {code}\n{stdout}\n{stderr}");
        Assert.Contains("imagenet: none of the 9 images read from the train split could be decoded", stderr);
        Assert.DoesNotContain("diverged", stderr);
        Assert.Empty(Directory.EnumerateFileSystemEntries(work.Path));
    }

    [Fact]
    public void A_streamed_batch_whose_every_image_is_skipped_is_left_out_and_refused_in_a_data_parallel_run()
    {
        using var dir = new TempDirectory();
        WriteImageNet(dir.Path);
        foreach (var f in Directory.GetFiles(Path.Combine(dir.Path, "train", Sorted[1]))) Truncate(f); // samples 3..5: the second batch of 3
        var folder = DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, dir.Path);
        var loader = new ImageFolderLoader(folder, 3, ImagePipeline.Eval, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, shuffle: false, threads: 2, skipBadImages: true);
        var batches = Run(loader, 0);
        Assert.Equal(2, batches.Count); // not a batch of nothing, whose loss is NaN
        Assert.All(batches, b => Assert.Equal(3 * 3 * 16 * 16, b.Length));
        Assert.Equal(3, loader.SkippedFiles.Count);
        // Ranks step together, so none can leave a batch out: rank 0 of 2 reads samples 0, 2, 4, 6; its third batch of 1 is bad.
        var rank = new ImageFolderLoader(folder, 1, ImagePipeline.Eval, ImageNetInfo.Mean, ImageNetInfo.Std, size: 16, shuffle: false, threads: 1, skipBadImages: true, rank: 0, worldSize: 2);
        var e = Assert.Throws<DatasetException>(() => Run(rank, 0));
        Assert.Contains("every image of batch 3 of epoch 1 on rank 0 was skipped", e.Message);
        Assert.Throws<ArgumentException>(() => new ImageFolderLoader(folder, 20000, ImagePipeline.Eval, ImageNetInfo.Mean, ImageNetInfo.Std));
    }

    [Fact]
    public void Missing_class_folders_empty_splits_and_flat_val_folders_are_errors_naming_the_path()
    {
        using var tiny = new TempDirectory();
        WriteTiny(tiny.Path);
        File.AppendAllLines(Path.Combine(tiny.Path, "wnids.txt"), ["n04000004"]);
        var e = Assert.Throws<DatasetException>(() => DatasetRegistry.Load("tinyimagenet", DatasetSplit.Train, tiny.Path));
        Assert.Equal(Path.Combine(tiny.Path, "train", "n04000004", "images"), e.File);
        Assert.Contains("n04000004", e.Message);

        using var net = new TempDirectory();
        WriteImageNet(net.Path, perClass: 1);
        Directory.Delete(Path.Combine(net.Path, "val", Sorted[1]), recursive: true);
        var missing = Assert.Throws<DatasetException>(() => DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Test, net.Path));
        Assert.Equal(Path.Combine(net.Path, "val", Sorted[1]), missing.File);
        foreach (var f in Directory.GetFiles(Path.Combine(net.Path, "train", Sorted[0]))) File.Delete(f);
        var empty = Assert.Throws<DatasetException>(() => DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Train, net.Path));
        Assert.Equal(Path.Combine(net.Path, "train", Sorted[0]), empty.File);
        Assert.Contains("no JPEG files", empty.Message);

        using var flat = new TempDirectory();
        Directory.CreateDirectory(Path.Combine(flat.Path, "train", Sorted[0]));
        Write(Path.Combine(flat.Path, "train", Sorted[0], "a.JPEG"), Flat(8, 8, (1, 2, 3)));
        Write(Path.Combine(flat.Path, "val", "ILSVRC2012_val_00000001.JPEG"), Flat(8, 8, (1, 2, 3)));
        var unsorted = Assert.Throws<DatasetException>(() => DatasetRegistry.OpenImageFolder("imagenet", DatasetSplit.Test, flat.Path));
        Assert.Contains("val/<wnid>/", unsorted.Message);
        Assert.Throws<DatasetException>(() => DatasetRegistry.Load("imagenet", DatasetSplit.Train, flat.Path));
    }

    [Fact]
    public void Imagenet_is_streamed_for_a_run_with_a_seeded_scoring_subset()
    {
        using var dir = new TempDirectory();
        WriteImageNet(dir.File("imagenet"), perClass: 4);
        var config = new RunConfig { Model = "resnet20", Dataset = "imagenet", DataDirectory = dir.File("imagenet"), Seed = 3 };
        using var cache = new DataCache();
        var data = cache.For(config);
        Assert.Equal(new InputShape(3, 224, 224), data.InputShape);
        Assert.Equal(3, data.Classes);
        using (var a = data.Scoring(2, 3, 4, Device.Cpu))
        using (var b = data.Scoring(2, 3, 4, Device.Cpu))
        {
            Assert.Equal(6, a.SampleCount);
            Assert.Equal(a.Indices, b.Indices);
            Assert.Equal([2, 2, 2], a.Select(x => x.Targets.ToArray<long>()).SelectMany(t => t).GroupBy(t => t).Select(g => g.Count()));
            Assert.True(a[0].Inputs.Equal(b[0].Inputs));
            Assert.Equal([4L, 3, 224, 224], a[0].Inputs.Shape);
        }
        using (var train = data.Train(4, 3, augment: true, Device.Cpu))
            Assert.Equal(3, train.BatchCount);

        var (code, stdout, stderr) = CliEndToEndTests.RunIn(dir.Path, "run", "-m", "resnet20", "-d", "imagenet", "--data", dir.File("imagenet"),
            "-c", "snip", "-s", "0.9", "-e", "1", "--max-batches", "2", "--batch-size", "4", "--samples-per-class", "1", "--warmup", "1", "--threads", "2");
        Assert.True(code == 0, $"pai run on imagenet exited {code}\n{stdout}\n{stderr}");
        Assert.Contains("top-1", stdout);
    }

    [Fact]
    public void Resnet18_takes_the_imagenet_stem_from_128_and_the_small_stem_at_64()
    {
        using var scope = new DisposeScope();
        Assert.True(ResNet.UsesImageNetStem(InputShape.ImageNet));
        // 128×128, the smallest input with the ImageNet stem, keeps the forward pass cheap.
        using var big = ModelZoo.Create("resnet18", new ModelOptions { InputShape = new InputShape(3, 128, 128), Classes = 5 });
        using var small = ModelZoo.Create("resnet18", new ModelOptions { InputShape = InputShape.TinyImageNet, Classes = 200 });
        var bigConv = big.NamedParameters().First(p => p.Name == "conv1.weight").Tensor;
        var smallConv = small.NamedParameters().First(p => p.Name == "conv1.weight").Tensor;
        Assert.Equal([64L, 3, 7, 7], bigConv.Shape);
        Assert.Equal([64L, 3, 3, 3], smallConv.Shape);
        using var x = Libtorch.Zeros([1, 3, 128, 128]);
        Assert.Equal([1L, 5], big.Forward(x).Shape);
        using var y = Libtorch.Zeros([1, 3, 64, 64]);
        Assert.Equal([1L, 200], small.Forward(y).Shape);
        using var clone = big.Copy();
        Assert.Equal([64L, 3, 7, 7], clone.NamedParameters().First(p => p.Name == "conv1.weight").Tensor.Shape);
    }
}
